"""The repository: open/create, backups whole or not at all, images, check and prune."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.errors import ConfigError, DroverError
from shared.repository import (
    BackupNotFound,
    CorruptionError,
    DiskManifest,
    Manifest,
    MemoryBackend,
    Repository,
    resolve_chunks,
)
from shared.repository.chunks import chunk_name
from shared.repository.codec import encode

CHUNK = 64 * 1024


@pytest.fixture
def repo() -> Repository:
    return Repository.from_backend(MemoryBackend(), chunk_size=CHUNK)


def make_image(chunks: int, zero: set[int], tail: int = 0) -> bytes:
    """An image of random chunks, with the chunks in `zero` all zeros and a short tail."""
    parts = [bytes(CHUNK) if i in zero else os.urandom(CHUNK) for i in range(chunks)]
    return b"".join(parts) + os.urandom(tail)


def store_chunks(repo: Repository, image: bytes, only: set[int] | None = None) -> dict[int, str]:
    """Put the non-zero chunks of `image` (or of the indexes in `only`); index -> digest."""
    stored = {}
    for index in range(-(-len(image) // CHUNK)):
        if only is not None and index not in only:
            continue
        data = image[index * CHUNK : (index + 1) * CHUNK]
        if not repo.is_zero(data):
            stored[index] = repo.put_chunk(data)
    return stored


def commit(
    repo: Repository,
    backup_id: str,
    image: bytes,
    chunks: dict[int, str],
    *,
    parent: str | None = None,
    created_at: str = "2024-01-01T00:00:00Z",
    vm_id: str = "vm-1",
) -> Manifest:
    disk = DiskManifest("disk-1", "vm1_Disk1", len(image), "cow", CHUNK, chunks)
    manifest = Manifest(
        backup_id=backup_id,
        vm_id=vm_id,
        vm_name="vm1",
        kind="incremental" if parent else "full",
        parent_id=parent,
        mode="image_transfer",
        created_at=created_at,
        ovf="<ovf/>",
        checkpoint_id=None,
        disks=[disk],
        warnings=[],
        stats={},
    )
    repo.commit_manifest(manifest)
    return manifest


def full_backup(repo: Repository, backup_id: str, image: bytes, **kwargs: object) -> Manifest:
    return commit(repo, backup_id, image, store_chunks(repo, image), **kwargs)  # type: ignore[arg-type]


def assemble(repo: Repository, backup_id: str) -> bytes:
    disk = repo.manifest(backup_id).disk("disk-1")
    out = bytearray()
    for offset, data in repo.read_image(backup_id, "disk-1"):
        assert offset == len(out)
        out += data if data is not None else bytes(min(CHUNK, disk.size - offset))
    return bytes(out)


# Opening


def test_open_creates_then_reopens(tmp_path: Path) -> None:
    repo = Repository.open(str(tmp_path / "r"))
    assert repo.chunk_size == 4 * 1024 * 1024
    config = json.loads((tmp_path / "r" / "config").read_text())
    assert config["id"] == repo.config.id and config["version"] == 1
    again = Repository.open(f"file://{tmp_path / 'r'}", create=False)
    assert again.config == repo.config


def test_open_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Drover repository"):
        Repository.open(str(tmp_path / "none"), create=False)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://bucket/prefix", "not supported yet"),
        ("ftp://host/x", "unknown scheme"),
        ("file://otherhost/x", "names host"),
        ("", "empty"),
    ],
)
def test_open_bad_locations(location: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Repository.open(location)


def test_open_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        Repository.open(str(tmp_path / "f"))


def test_chunk_size_is_fixed_at_creation(tmp_path: Path) -> None:
    Repository.open(str(tmp_path), chunk_size=1 << 20)
    assert Repository.open(str(tmp_path)).chunk_size == 1 << 20
    with pytest.raises(ConfigError, match="1048576-byte chunks"):
        Repository.open(str(tmp_path), chunk_size=4 << 20)
    with pytest.raises(ConfigError, match="multiple of 4 KiB"):
        Repository.open(str(tmp_path / "new"), chunk_size=1000)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    Repository.open(str(tmp_path))
    config = json.loads((tmp_path / "config").read_text())
    (tmp_path / "config").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ConfigError, match="upgrade Drover"):
        Repository.open(str(tmp_path))


# Backups


def test_manifest_round_trip(repo: Repository) -> None:
    image = make_image(4, zero={1})
    manifest = full_backup(repo, "b1", image)
    assert repo.manifest("b1") == manifest
    assert sorted(manifest.disks[0].chunks) == [0, 2, 3]


def test_zero_chunks_are_not_stored(repo: Repository) -> None:
    image = make_image(6, zero={0, 2, 3})
    full_backup(repo, "b1", image)
    assert len(list(repo.chunks.digests())) == 3
    with pytest.raises(ValueError):
        repo.put_chunk(bytes(CHUNK))


def test_unknown_backup(repo: Repository) -> None:
    with pytest.raises(BackupNotFound, match="drover backups"):
        repo.manifest("nope")
    with pytest.raises(BackupNotFound):
        repo.remove_backup("nope")


def test_manifest_with_missing_chunk_is_not_committed(repo: Repository) -> None:
    image = make_image(2, zero=set())
    chunks = store_chunks(repo, image)
    chunks[1] = "f" * 64
    with pytest.raises(DroverError, match="run the backup again"):
        commit(repo, "b1", image, chunks)
    assert repo.list_backups() == []


def test_list_backups_sorted_and_filtered(repo: Repository) -> None:
    image = make_image(1, zero=set())
    full_backup(repo, "b-late", image, created_at="2024-03-01T00:00:00Z")
    full_backup(repo, "b-early", image, created_at="2024-01-01T00:00:00Z", vm_id="vm-2")
    full_backup(repo, "b-mid", image, created_at="2024-02-01T00:00:00Z")
    assert [s.backup_id for s in repo.list_backups()] == ["b-early", "b-mid", "b-late"]
    assert [s.backup_id for s in repo.list_backups(vm_id="vm-1")] == ["b-mid", "b-late"]
    assert repo.list_backups()[0].disks[0].size == CHUNK


def test_list_backups_without_index(repo: Repository) -> None:
    full_backup(repo, "b1", make_image(1, zero=set()))
    repo.backend.remove("index/b1")
    assert [s.backup_id for s in repo.list_backups()] == ["b1"]


def test_remove_and_prune(repo: Repository) -> None:
    shared_part = make_image(2, zero=set())
    first = shared_part + make_image(2, zero=set())
    second = shared_part + make_image(2, zero=set())
    full_backup(repo, "b1", first)
    full_backup(repo, "b2", second)
    assert len(list(repo.chunks.digests())) == 6
    repo.remove_backup("b1")
    assert [s.backup_id for s in repo.list_backups()] == ["b2"]
    report = repo.prune()
    assert (report.chunks_removed, report.chunks_kept, report.backups) == (2, 4, 1)
    assert report.bytes_freed > 2 * CHUNK
    assert assemble(repo, "b2") == second
    assert repo.check(read_data=True).ok


# Images


def test_read_image_in_order_with_zeros_and_tail(repo: Repository) -> None:
    image = make_image(40, zero={0, 5, 6, 39}, tail=1000)
    full_backup(repo, "b1", image)
    offsets = [(offset, data is None) for offset, data in repo.read_image("b1", "disk-1")]
    assert [o for o, _ in offsets] == [i * CHUNK for i in range(41)]
    assert [i for i, (_, zero) in enumerate(offsets) if zero] == [0, 5, 6, 39]
    assert assemble(repo, "b1") == image


def test_read_image_closed_early(repo: Repository) -> None:
    full_backup(repo, "b1", make_image(30, zero=set()))
    images = repo.read_image("b1", "disk-1")
    next(images)
    images.close()  # type: ignore[attr-defined]


def test_incremental_restores_alone(repo: Repository) -> None:
    base = make_image(8, zero={7}, tail=500)
    full = full_backup(repo, "full", base)
    changed_image = bytearray(base)
    changed_image[2 * CHUNK : 3 * CHUNK] = os.urandom(CHUNK)
    changed_image[4 * CHUNK : 5 * CHUNK] = bytes(CHUNK)
    changed_image[7 * CHUNK + 10 : 7 * CHUNK + 20] = b"x" * 10
    new = bytes(changed_image)
    dirty = {2, 4, 7}
    changed: dict[int, str | None] = {i: None for i in dirty}
    changed.update(store_chunks(repo, new, only=dirty))
    chunks = resolve_chunks(full.disks[0].chunks, changed, len(new), CHUNK)
    commit(repo, "incr", new, chunks, parent="full", created_at="2024-01-02T00:00:00Z")
    repo.remove_backup("full")
    repo.prune()
    assert assemble(repo, "incr") == new
    assert repo.image_sha256("incr", "disk-1") == hashlib.sha256(new).hexdigest()


def test_image_sha256(repo: Repository) -> None:
    image = make_image(5, zero={1, 4}, tail=77)
    full_backup(repo, "b1", image)
    assert repo.image_sha256("b1", "disk-1") == hashlib.sha256(image).hexdigest()


def test_export_raw_equals_source_and_is_sparse(tmp_path: Path) -> None:
    repo = Repository.open(str(tmp_path / "repo"), chunk_size=CHUNK)
    image = make_image(64, zero=set(range(8, 60)), tail=4096)
    full_backup(repo, "b1", image)
    target = tmp_path / "disk.raw"
    repo.export_disk("b1", "disk-1", target)
    assert target.read_bytes() == image
    assert target.stat().st_blocks * 512 < len(image) // 2


def test_export_over_an_existing_file(tmp_path: Path, repo: Repository) -> None:
    image = make_image(3, zero={1})
    full_backup(repo, "b1", image)
    target = tmp_path / "disk.raw"
    target.write_bytes(b"\xff" * (len(image) * 2))
    repo.export_disk("b1", "disk-1", target)
    assert target.read_bytes() == image


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img is not installed")
def test_export_qcow2(tmp_path: Path, repo: Repository) -> None:
    image = make_image(6, zero={2})
    full_backup(repo, "b1", image)
    target = tmp_path / "disk.qcow2"
    repo.export_disk("b1", "disk-1", target, fmt="qcow2")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(target)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == len(image)
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(target), str(back)], check=True)
    assert back.read_bytes() == image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw", "disk.qcow2"]


def test_export_unknown_format(tmp_path: Path, repo: Repository) -> None:
    full_backup(repo, "b1", make_image(1, zero=set()))
    with pytest.raises(ConfigError, match="raw or qcow2"):
        repo.export_disk("b1", "disk-1", tmp_path / "x", fmt="vmdk")


# Check and corruption


def test_check_clean(repo: Repository) -> None:
    full_backup(repo, "b1", make_image(4, zero={1}))
    report = repo.check(read_data=True)
    assert report.ok and report.backups == 1
    assert report.chunks_referenced == report.chunks_stored == report.chunks_read == 3


def test_check_finds_a_missing_chunk(repo: Repository) -> None:
    manifest = full_backup(repo, "b1", make_image(4, zero=set()))
    repo.chunks.remove(manifest.disks[0].chunks[2])
    report = repo.check()
    assert not report.ok
    assert "backup b1 disk disk-1: 1 chunk(s) missing (first: chunk 2" in report.problems[0]


def test_check_read_data_finds_a_corrupt_chunk(repo: Repository) -> None:
    manifest = full_backup(repo, "b1", make_image(4, zero=set()))
    digest = manifest.disks[0].chunks[1]
    blob = bytearray(repo.backend.load(chunk_name(digest)))
    blob[-1] ^= 0xFF
    repo.backend.save(chunk_name(digest), bytes(blob))
    assert repo.check().ok
    report = repo.check(read_data=True)
    assert len(report.problems) == 1 and digest in report.problems[0]
    assert report.problems[0].endswith("used by backups b1")
    with pytest.raises(CorruptionError):
        assemble(repo, "b1")


def test_check_names_every_backup_that_uses_a_corrupt_chunk(repo: Repository) -> None:
    image = make_image(4, zero=set())
    manifest = full_backup(repo, "b1", image)
    full_backup(repo, "b2", image)  # deduplicated: the same chunks
    digest = manifest.disks[0].chunks[0]
    repo.backend.save(chunk_name(digest), b"\x00garbage")
    [problem] = repo.check(read_data=True).problems
    assert digest in problem and problem.endswith("used by backups b1, b2")


def test_check_names_an_index_entry_whose_manifest_was_never_committed(
    repo: Repository,
) -> None:
    full_backup(repo, "b1", make_image(2, zero=set()))
    repo.backend.save("index/b9", repo.backend.load("index/b1"))  # finalize stopped here
    report = repo.check()
    assert report.problems == [
        "index entry b9 has no manifest: the backup was never committed and is ignored"
    ]
    assert [b.backup_id for b in repo.list_backups()] == ["b1"]


def test_check_reports_an_unreadable_manifest(repo: Repository) -> None:
    full_backup(repo, "b1", make_image(1, zero=set()))
    repo.backend.save("manifests/b1", b"\x00not json")
    report = repo.check()
    assert not report.ok and "not valid JSON" in report.problems[0]
    with pytest.raises(CorruptionError):
        repo.prune()


# Several processes at once


def _writer(location: str, seed: int) -> list[str]:
    repo = Repository.open(location)
    blocks = [hashlib.sha256(f"{seed % 2}-{i}".encode()).digest() * 2048 for i in range(16)]
    return [repo.put_chunk(block) for block in blocks]


def test_processes_write_the_same_chunks(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.starmap(_writer, [(location, seed) for seed in range(8)])
    repo = Repository.open(location, create=False)
    assert len(set(repo.chunks.digests())) == 32
    assert {d for r in results for d in r} == set(repo.chunks.digests())
    for digest in repo.chunks.digests():
        repo.get_chunk(digest)
    leftovers = [p for p in (tmp_path / "repo").rglob(".tmp-*")]
    assert leftovers == []


def test_failed_export_leaves_no_file(tmp_path: Path, repo: Repository) -> None:
    manifest = full_backup(repo, "b1", make_image(3, zero=set()))
    repo.chunks.remove(manifest.disks[0].chunks[2])
    with pytest.raises(DroverError, match="not found"):
        repo.export_disk("b1", "disk-1", tmp_path / "disk.raw")
    assert list(tmp_path.iterdir()) == []


def test_invalid_manifest_document_is_corruption(repo: Repository) -> None:
    full_backup(repo, "b1", make_image(1, zero=set()))
    repo.backend.save("manifests/b1", encode(json.dumps({"backup_id": "b1"}).encode()))
    with pytest.raises(CorruptionError, match="invalid"):
        repo.manifest("b1")
    assert [s.backup_id for s in repo.list_backups()] == ["b1"]  # the summary still lists it
