"""Thin wrappers around qemu-img and qemu-io."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lab.dataplane import VolumeFormat

# qemu-io reads the pattern file into memory: keep each write command modest.
WRITE_CHUNK = 32 * 1024 * 1024


class QemuError(RuntimeError):
    pass


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise QemuError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def qemu_fmt(fmt: VolumeFormat) -> str:
    return "qcow2" if fmt is VolumeFormat.COW else "raw"


def create(path: Path, fmt: VolumeFormat, size: int,
           backing: str | None = None, backing_fmt: str | None = None) -> None:
    argv = ["qemu-img", "create", "-q", "-f", qemu_fmt(fmt)]
    if fmt is VolumeFormat.COW:
        argv += ["-o", "compat=1.1"]
    if backing is not None:
        argv += ["-b", backing, "-F", backing_fmt or "qcow2"]
    argv += [str(path), str(size)]
    run(argv)


def info(path: Path) -> dict[str, object]:
    """`qemu-img info` of one image; -U so it works while the image is exported."""
    out = run(["qemu-img", "info", "-U", "--output", "json", str(path)])
    result: dict[str, object] = json.loads(out)
    return result


def bitmaps(path: Path) -> list[str]:
    data = info(path).get("format-specific", {})
    assert isinstance(data, dict)
    inner = data.get("data", {})
    return [b["name"] for b in inner.get("bitmaps", [])]


def bitmap_add(path: Path, name: str, enable: bool = True) -> None:
    run(["qemu-img", "bitmap", "--add", *(["--enable"] if enable else ["--disable"]),
         "-f", "qcow2", str(path), name])


def bitmap_remove(path: Path, name: str) -> None:
    run(["qemu-img", "bitmap", "--remove", "-f", "qcow2", str(path), name])


def bitmap_merge(dst: Path, dst_bitmap: str, src: Path, src_bitmap: str) -> None:
    """Merge `src_bitmap` of image `src` (qcow2) into `dst_bitmap` of image `dst`."""
    argv = ["qemu-img", "bitmap", "-f", "qcow2", "--merge", src_bitmap]
    if src != dst:
        argv += ["-b", str(src), "-F", "qcow2"]
    run([*argv, str(dst), dst_bitmap])


def commit(path: Path) -> None:
    """Commit `path` into its backing file, leaving `path` itself untouched."""
    run(["qemu-img", "commit", "-q", "-f", "qcow2", "-d", str(path)])


def rebase_unsafe(path: Path, backing: str, backing_fmt: str) -> None:
    run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", backing_fmt, str(path)])


def convert(src: Path, src_fmt: str, dst: Path, dst_fmt: VolumeFormat) -> None:
    argv = ["qemu-img", "convert", "-q", "-f", src_fmt, "-O", qemu_fmt(dst_fmt)]
    if dst_fmt is VolumeFormat.COW:
        argv += ["-o", "compat=1.1"]
    run([*argv, str(src), str(dst)])


def _chunks(offset: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    for start in range(0, len(data), WRITE_CHUNK):
        yield offset + start, data[start:start + WRITE_CHUNK]


def write(path: Path, fmt: str, offset: int, data: bytes) -> None:
    """Write guest data through qemu's block layer (so enabled bitmaps record it)."""
    if not data:
        return
    with tempfile.TemporaryDirectory(prefix="lab-io-") as tmp:
        commands: list[str] = []
        for i, (off, chunk) in enumerate(_chunks(offset, data)):
            pattern = Path(tmp) / f"chunk-{i}"
            pattern.write_bytes(chunk)
            commands += ["-c", f"write -q -s {pattern} {off} {len(chunk)}"]
        run(["qemu-io", "-f", fmt, *commands, str(path)])


def pwrite(path: Path, offset: int, data: bytes) -> None:
    """Write directly into a raw image file."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
