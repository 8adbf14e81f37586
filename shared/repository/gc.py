"""Garbage collection of chunks no backup references, safe while backups are being written.

Why it is not simply "delete what no manifest references": a running job stores chunks (or
finds them already stored and reuses them) long before its manifest, written last, references
them; and an incremental's manifest also references its parent's chunks, which the job never
writes at all. The scheme, after Proxmox Backup Server's GC (a cutoff date on chunks) with the
writers' start times playing the role of its "oldest writer" lock:

1. Writers date what they use. `ChunkStore.put` writes a new chunk (its mtime is "now") or,
   when the chunk is already stored, touches it (its mtime becomes "now"). So every chunk a
   job stores or is about to reference through its own transfers carries a date no older than
   the job itself.
2. The collector is told of the running jobs (`ActiveWriter`: from Redis, every job that has
   not finished, on any repository), and sets the cutoff to
   `min(collector start, oldest running job's creation) - grace`.
   A chunk dated at or after the cutoff is never removed. A job created after the collector
   started writes or touches its chunks after that start, so it is covered too; `grace`
   absorbs clock skew between workers and the repository's file server.
3. Chunks of parents: the collector keeps every chunk referenced by a manifest it lists, and
   the manifests of backups that a running job names as its parent cannot be removed
   meanwhile (retention and `backups remove` keep them; `ActiveWriter.parent_id`). A job that
   chose a parent that was removed before it committed fails to build its manifest (the parent
   manifest is read at commit), and `commit_manifest` checks that every chunk exists: a broken
   backup is never committed.
4. Digests a running job has recorded as stored (`ActiveWriter.digests`) are kept as well,
   whatever their date: belt and braces for a repository whose clock is off.
5. The removal itself cannot lose a race with a touch: `remove_if_older` renames the chunk
   aside first (a writer touching it afterwards finds it missing and writes it again), then
   reads the date of the renamed file (which carries any earlier touch) and puts it back when
   it turned fresh. Two collectors at once are harmless: each removal is idempotent.

Backends that cannot date objects (no `touch`/`mtime`/`remove_if_older`) are only collected
when no job is running at all, as restic's exclusive prune lock would require.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from shared.errors import DroverError
from shared.repository.chunks import chunk_name
from shared.repository.errors import ObjectNotFound
from shared.repository.repository import Repository

DEFAULT_GRACE_S = 300.0


@runtime_checkable
class DatedBackend(Protocol):
    def touch(self, name: str) -> bool: ...

    def mtime(self, name: str) -> float: ...

    def remove_if_older(self, name: str, cutoff: float) -> bool: ...


@dataclass(frozen=True)
class ActiveWriter:
    """A job that has not finished: when it was created, the backup it builds on, the chunks
    it has recorded as stored so far."""

    job_id: str
    created_at: float
    parent_id: str | None = None
    digests: frozenset[str] = frozenset()


@dataclass
class GcReport:
    backups: int = 0
    chunks_stored: int = 0
    chunks_referenced: int = 0
    chunks_kept_recent: int = 0
    chunks_kept_running: int = 0
    chunks_removed: int = 0
    bytes_freed: int = 0
    cutoff: float = 0.0
    running_jobs: list[str] = field(default_factory=list)
    dry_run: bool = False
    skipped: str = ""  # why nothing was collected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(
    repo: Repository,
    active: Iterable[ActiveWriter] = (),
    *,
    grace_s: float = DEFAULT_GRACE_S,
    now: Callable[[], float] = time.time,
    dry_run: bool = False,
    before_remove: Callable[[list[str]], None] | None = None,
) -> GcReport:
    """Remove unreferenced chunks older than the cutoff (see the module's docstring).

    `before_remove` is called with the candidates once they are chosen and before any is
    removed: tests use it to interleave a writer at the worst moment."""
    writers = list(active)
    started = now()
    report = GcReport(dry_run=dry_run, running_jobs=sorted(w.job_id for w in writers))
    report.cutoff = min([started, *(w.created_at for w in writers)]) - grace_s
    backend = repo.backend
    if not isinstance(backend, DatedBackend) and writers:
        report.skipped = (
            f"repository {repo.location} cannot date its chunks and {len(writers)} job(s) "
            "are running: chunks are collected when none is"
        )
        return report
    # The chunks first, then the manifests: a manifest committed after this listing
    # references chunks that were either listed (and are dated by their writer, step 1) or
    # written after it (not listed, so not candidates).
    stored = list(repo.chunks.digests())
    report.chunks_stored = len(stored)
    referenced: set[str] = set()
    for backup_id in repo.backup_ids():
        try:
            manifest = repo.manifest(backup_id)
        except ObjectNotFound:
            continue  # removed meanwhile
        report.backups += 1
        for disk in manifest.disks:
            referenced.update(disk.chunks.values())
    report.chunks_referenced = len(referenced)
    running = set().union(*(w.digests for w in writers)) if writers else set()
    candidates = []
    for digest in stored:
        if digest in referenced:
            continue
        if digest in running:
            report.chunks_kept_running += 1
            continue
        if isinstance(backend, DatedBackend) and _mtime(backend, digest) >= report.cutoff:
            report.chunks_kept_recent += 1
            continue
        candidates.append(digest)
    if before_remove is not None:
        before_remove(candidates)
    for digest in candidates:
        size = _size(repo, digest)
        if dry_run:
            removed = True
        elif isinstance(backend, DatedBackend):
            removed = backend.remove_if_older(chunk_name(digest), report.cutoff)
        else:
            removed = _remove(repo, digest)
        if removed:
            report.chunks_removed += 1
            report.bytes_freed += size
        else:
            report.chunks_kept_recent += 1
    return report


def _mtime(backend: DatedBackend, digest: str) -> float:
    try:
        return backend.mtime(chunk_name(digest))
    except ObjectNotFound:
        return float("inf")  # gone already: nothing to remove


def _size(repo: Repository, digest: str) -> int:
    try:
        return repo.chunks.size(digest)
    except DroverError:
        return 0


def _remove(repo: Repository, digest: str) -> bool:
    try:
        repo.chunks.remove(digest)
    except ObjectNotFound:
        return False
    return True
