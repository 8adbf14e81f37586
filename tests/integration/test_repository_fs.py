"""The repository on a real filesystem with the real chunk size, written as workers write it:
several processes, each with several threads, storing the disks of concurrent backups."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.repository import DiskManifest, Manifest, Repository, resolve_chunks, utc_now

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
DISK_SIZE = 48 * MiB + 12345


def write_image(path: Path, seed: int) -> None:
    """A sparse disk image: random data with holes, and a short last chunk."""
    rng = random.Random(seed)
    with open(path, "wb") as file:
        file.truncate(DISK_SIZE)
        for offset in range(0, DISK_SIZE, 2 * MiB):
            if rng.random() < 0.6:
                file.seek(offset)
                file.write(rng.randbytes(min(MiB + 7, DISK_SIZE - offset)))


def transfer(location: str, image: str, indexes: list[int]) -> dict[int, str]:
    """What one transfer task does: read its chunks, store the non-zero ones with 4 threads."""
    repo = Repository.open(location)
    size = repo.chunk_size

    def one(index: int) -> tuple[int, str | None]:
        with open(image, "rb") as file:
            file.seek(index * size)
            data = file.read(size)
        return index, None if repo.is_zero(data) else repo.put_chunk(data)

    with ThreadPoolExecutor(4) as pool:
        return {i: d for i, d in pool.map(one, indexes) if d is not None}


def backup(location: str, backup_id: str, image: Path, parent: Manifest | None) -> Manifest:
    repo = Repository.open(location)
    count = -(-DISK_SIZE // repo.chunk_size)
    halves = [list(range(0, count, 2)), list(range(1, count, 2))]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parts = pool.starmap(transfer, [(location, str(image), half) for half in halves])
    stored = {index: digest for part in parts for index, digest in part.items()}
    changed: dict[int, str | None] = {i: stored.get(i) for i in range(count)}
    chunks = resolve_chunks(parent.disks[0].chunks if parent else {}, changed, DISK_SIZE, 4 * MiB)
    disk = DiskManifest("disk-1", "d1", DISK_SIZE, "raw", repo.chunk_size, chunks)
    manifest = Manifest(
        backup_id=backup_id,
        vm_id="vm-1",
        vm_name="vm1",
        kind="incremental" if parent else "full",
        parent_id=parent.backup_id if parent else None,
        mode="image_transfer",
        created_at=utc_now(),
        ovf="<ovf/>",
        checkpoint_id=None,
        disks=[disk],
    )
    repo.commit_manifest(manifest)
    return manifest


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def test_concurrent_backups_restore_bit_exact(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    images = [tmp_path / "a.img", tmp_path / "b.img"]
    for seed, image in enumerate(images):
        write_image(image, seed)
    with ThreadPoolExecutor(2) as pool:
        fulls = list(pool.map(lambda i: backup(location, f"full-{i}", images[i], None), [0, 1]))

    with open(images[0], "r+b") as file:  # the guest writes between backups
        file.seek(5 * MiB)
        file.write(os.urandom(3 * MiB))
        file.seek(20 * MiB)
        file.write(bytes(4 * MiB))
    backup(location, "incr-0", images[0], fulls[0])

    repo = Repository.open(location, create=False)
    summaries = repo.list_backups()
    assert {s.backup_id for s in summaries} == {"full-0", "full-1", "incr-0"}
    assert summaries[-1].backup_id == "incr-0" and summaries[-1].parent_id == "full-0"
    repo.remove_backup("full-0")
    repo.prune()
    assert repo.check(read_data=True).ok
    for backup_id, image in (("incr-0", images[0]), ("full-1", images[1])):
        out = tmp_path / f"{backup_id}.raw"
        repo.export_disk(backup_id, "disk-1", out)
        assert sha256_of(out) == sha256_of(image) == repo.image_sha256(backup_id, "disk-1")


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img is not installed")
def test_qcow2_export_compares_equal(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    image = tmp_path / "a.img"
    write_image(image, 7)
    backup(location, "full", image, None)
    out = tmp_path / "full.qcow2"
    Repository.open(location).export_disk("full", "disk-1", out, fmt="qcow2")
    command = ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(image), str(out)]
    subprocess.run(command, check=True, capture_output=True)
