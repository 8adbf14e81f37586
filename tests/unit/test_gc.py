"""Garbage collection while backups are written: interleavings played step by step."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared.repository import DiskManifest, LocalBackend, Manifest, MemoryBackend, Repository
from shared.repository.chunks import chunk_name
from shared.repository.gc import ActiveWriter, collect

CHUNK = 4096
LONG_AGO = time.time() - 30 * 86400


def data(n: int) -> bytes:
    return bytes([n % 251 + 1]) * CHUNK


def local_repo(tmp_path: Path) -> Repository:
    return Repository.from_backend(LocalBackend(tmp_path / "repo", fsync=False), chunk_size=CHUNK)


def age(repo: Repository, digest: str, when: float = LONG_AGO) -> None:
    """Date a chunk as written `when` (as if by a backup long ago)."""
    backend = repo.backend
    if isinstance(backend, LocalBackend):
        os.utime(backend.root / chunk_name(digest), (when, when))
    else:
        assert isinstance(backend, MemoryBackend)
        backend.set_mtime(chunk_name(digest), when)


def manifest(backup_id: str, chunks: dict[int, str], parent: str | None = None) -> Manifest:
    disk = DiskManifest("d0", "os", CHUNK * 8, "raw", CHUNK, chunks)
    return Manifest(
        backup_id, "vm1", "web", "incremental" if parent else "full", parent, "image_transfer",
        "2024-05-01T00:00:00Z", "<ovf/>", None, [disk],
    )  # fmt: skip


def old_backup(repo: Repository, backup_id: str, *numbers: int) -> list[str]:
    digests = [repo.put_chunk(data(n)) for n in numbers]
    for digest in digests:
        age(repo, digest)
    repo.commit_manifest(manifest(backup_id, dict(enumerate(digests))))
    return digests


def stored(repo: Repository) -> set[str]:
    return set(repo.chunks.digests())


def test_unreferenced_old_chunks_are_removed_and_referenced_ones_kept(tmp_path: Path) -> None:
    repo = local_repo(tmp_path)
    kept = old_backup(repo, "b1", 1, 2)
    gone = old_backup(repo, "b2", 3, 4)
    repo.remove_backup("b2")
    report = collect(repo)
    assert report.chunks_removed == 2 and report.bytes_freed > 0
    assert stored(repo) == set(kept)
    assert not set(gone) & stored(repo)
    assert repo.check(read_data=True).ok


def test_gc_during_a_backup_never_removes_what_its_manifest_then_references(
    tmp_path: Path,
) -> None:
    """The job starts, stores a new chunk early (dated as if hours ago: a long job) and
    reuses an unreferenced old chunk; GC runs; the job reuses another unreferenced chunk while
    GC is between choosing and removing; then the job commits. Every chunk it references is
    there, and only the chunk nobody uses is gone."""
    repo = local_repo(tmp_path)
    base = old_backup(repo, "b1", 1)
    orphans = old_backup(repo, "b0", 10, 11, 12)
    repo.remove_backup("b0")  # 10, 11, 12: unreferenced, old
    job_started = time.time() - 3 * 3600
    early = repo.put_chunk(data(20))
    age(repo, early, job_started + 60)  # stored an hour after the job began, hours ago
    reused_before = repo.put_chunk(data(10))  # dedup hit on an orphan: touched
    assert reused_before == orphans[0]
    writer = ActiveWriter("job-2", job_started, parent_id="b1", digests=frozenset({early}))

    seen: list[list[str]] = []

    def writer_moves(candidates: list[str]) -> None:
        seen.append(list(candidates))
        assert orphans[1] in candidates  # GC chose it...
        assert repo.put_chunk(data(11)) == orphans[1]  # ...and the writer reuses it now

    report = collect(repo, [writer], before_remove=writer_moves)
    assert seen and report.chunks_removed == 1  # only orphans[2]
    chunks = {0: base[0], 1: early, 2: reused_before, 3: orphans[1]}
    repo.commit_manifest(manifest("job-2", chunks, parent="b1"))  # verifies every chunk
    assert repo.check(read_data=True).ok
    assert orphans[2] not in stored(repo)


def test_without_the_running_job_the_same_chunks_would_go(tmp_path: Path) -> None:
    """The cutoff comes from the running jobs: ignoring them loses the early chunk."""
    repo = local_repo(tmp_path)
    early = repo.put_chunk(data(20))
    age(repo, early, time.time() - 3 * 3600)
    assert collect(repo, [], dry_run=True).chunks_removed == 1
    report = collect(repo, [ActiveWriter("job", time.time() - 4 * 3600)])
    assert report.chunks_removed == 0 and early in stored(repo)


def test_chunks_recorded_by_a_running_job_are_kept_whatever_their_date(tmp_path: Path) -> None:
    repo = local_repo(tmp_path)
    early = repo.put_chunk(data(5))
    age(repo, early)
    report = collect(repo, [ActiveWriter("job", time.time(), digests=frozenset({early}))])
    assert report.chunks_kept_running == 1 and early in stored(repo)


def test_a_touch_just_before_the_removal_keeps_the_chunk(tmp_path: Path) -> None:
    repo = local_repo(tmp_path)
    backend = repo.backend
    assert isinstance(backend, LocalBackend)
    digest = repo.put_chunk(data(7))
    age(repo, digest)
    cutoff = time.time() - 60
    assert backend.touch(chunk_name(digest))
    assert backend.remove_if_older(chunk_name(digest), cutoff) is False
    assert repo.get_chunk(digest) == data(7)
    age(repo, digest)
    assert backend.remove_if_older(chunk_name(digest), cutoff) is True
    assert not backend.touch(chunk_name(digest))  # a writer now finds it missing...
    assert repo.put_chunk(data(7)) == digest  # ...and stores it again
    assert repo.get_chunk(digest) == data(7)
    assert not list((backend.root / "chunks").rglob(".tmp-*"))  # nothing left aside


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    repo = local_repo(tmp_path)
    old_backup(repo, "b2", 3)
    repo.remove_backup("b2")
    report = collect(repo, dry_run=True)
    assert report.dry_run and report.chunks_removed == 1 and len(stored(repo)) == 1


def test_memory_backend_dates_chunks_too() -> None:
    repo = Repository.from_backend(MemoryBackend(), chunk_size=CHUNK)
    old_backup(repo, "b2", 3)
    fresh = repo.put_chunk(data(4))
    repo.remove_backup("b2")
    report = collect(repo, [ActiveWriter("j", time.time() - 10)])
    assert report.chunks_removed == 1 and stored(repo) == {fresh}


class _Undated(MemoryBackend):
    touch = mtime = remove_if_older = None  # type: ignore[assignment]


def test_a_backend_without_dates_is_collected_only_when_no_job_runs() -> None:
    backend = _Undated()
    repo = Repository.from_backend(backend, chunk_size=CHUNK)
    repo.put_chunk(data(1))
    report = collect(repo, [ActiveWriter("j", time.time())])
    assert report.skipped and report.chunks_removed == 0
    assert collect(repo, []).chunks_removed == 1


@pytest.mark.parametrize("grace", [0.0, 3600.0])
def test_grace_keeps_young_chunks(tmp_path: Path, grace: float) -> None:
    repo = local_repo(tmp_path)
    repo.put_chunk(data(9))  # written now, by no backup
    removed = collect(repo, [], grace_s=grace, now=lambda: time.time() + 1).chunks_removed
    assert removed == (1 if grace == 0.0 else 0)
