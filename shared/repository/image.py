"""A disk of a backup as one image: streamed in order, exported, or hashed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from shared.errors import ConfigError, DroverError
from shared.repository.errors import CorruptionError
from shared.repository.manifest import DiskManifest

Chunks = Iterator[tuple[int, bytes | None]]


def read_image(disk: DiskManifest, get: Callable[[str], bytes], workers: int = 4) -> Chunks:
    """Yield (offset, data or None for zeros) for every chunk in order, fetching ahead."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drover-read")
    pending: deque[tuple[int, Future[bytes] | None]] = deque()
    indexes = iter(range(disk.chunk_count))

    def submit_next() -> None:
        index = next(indexes, None)
        if index is not None:
            digest = disk.chunks.get(index)
            pending.append((index, pool.submit(get, digest) if digest else None))

    try:
        for _ in range(workers * 2):
            submit_next()
        while pending:
            index, future = pending.popleft()
            submit_next()
            yield index * disk.chunk_size, _checked(disk, index, future)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _checked(disk: DiskManifest, index: int, future: Future[bytes] | None) -> bytes | None:
    if future is None:
        return None
    data = future.result()
    if len(data) != disk.chunk_length(index):
        raise CorruptionError(
            f"disk {disk.disk_id} chunk {index} holds {len(data)} bytes, "
            f"expected {disk.chunk_length(index)}",
            hint="the manifest does not match its chunks; take a new full backup",
        )
    return data


def image_sha256(disk: DiskManifest, chunks: Chunks) -> str:
    digest = hashlib.sha256()
    zeros = bytes(disk.chunk_size)
    for offset, data in chunks:
        if data is None:
            length = min(disk.chunk_size, disk.size - offset)
            digest.update(zeros if length == disk.chunk_size else zeros[:length])
        else:
            digest.update(data)
    return digest.hexdigest()


def export_raw(disk: DiskManifest, chunks: Chunks, path: Path) -> None:
    """Write the image to a file (sparse: zeros are skipped) or a block device (zeros written)."""
    device = _is_block_device(path)
    try:
        with open(path, "r+b" if device else "wb") as file:
            _write_chunks(file, disk, chunks, device)
    except BaseException as exc:
        if not device:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DroverError(
                f"could not write disk {disk.disk_id} to {path}: {exc.strerror or exc}",
                hint="check that the target directory exists, is writable and has space",
            ) from exc
        raise


def _write_chunks(file: BinaryIO, disk: DiskManifest, chunks: Chunks, device: bool) -> None:
    zeros = bytes(disk.chunk_size) if device else b""
    for offset, data in chunks:
        if data is None and not device:
            continue
        file.seek(offset)
        file.write(data if data is not None else zeros[: disk.size - offset])
    if not device:
        file.truncate(disk.size)


def export_qcow2(disk: DiskManifest, chunks: Chunks, path: Path) -> None:
    """Write a raw image beside the target, then convert it with `qemu-img`."""
    tmp = path.with_name(f".{path.name}.raw-tmp")
    try:
        export_raw(disk, chunks, tmp)
        _run_qemu_img(["convert", "-f", "raw", "-O", "qcow2", str(tmp), str(path)], path)
    finally:
        tmp.unlink(missing_ok=True)


def export_image(disk: DiskManifest, chunks: Chunks, path: Path, fmt: str) -> None:
    if fmt == "raw":
        export_raw(disk, chunks, path)
    elif fmt == "qcow2":
        export_qcow2(disk, chunks, path)
    else:
        raise ConfigError(f"export format {fmt!r} is not supported", hint="use raw or qcow2")


def _run_qemu_img(args: list[str], path: Path) -> None:
    try:
        result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DroverError(
            "qemu-img is not installed", hint="install qemu-utils (`make setup` does)"
        ) from exc
    if result.returncode:
        raise DroverError(
            f"qemu-img could not write {path}: {result.stderr.strip()}",
            hint="check the target path and free space",
        )


def _is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
