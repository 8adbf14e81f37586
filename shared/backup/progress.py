"""Chunk progress of one disk of one job, in Redis: what makes a re-delivered transfer resume."""

from __future__ import annotations

from shared.backup.context import DiskRef
from shared.backup.journal import JobJournal
from shared.backup.plan import ChunkPlan
from shared.state import DiskProgress

LOCK_RENEW_EVERY = 64  # chunks


class ChunkProgress:
    def __init__(self, journal: JobJournal, disk: DiskRef) -> None:
        self._journal = journal
        self._store = journal.store
        self._disk = disk

    def plan(self, planned_chunks: int) -> None:
        disk = self._disk
        progress = DiskProgress(disk.id, disk.name, disk.size, planned_chunks)
        self._store.plan_disk(self._journal.job_id, progress)

    def stored(self) -> set[int]:
        return set(self._store.stored_chunks(self._journal.job_id, self._disk.id))

    def read(self, plan: ChunkPlan) -> None:
        """A chunk came from the disk (counted before it is stored: a worker that dies in
        between leaves a read that the next attempt repeats)."""
        self._store.record_read(self._journal.job_id, self._disk.id)

    def done(self, plan: ChunkPlan, digest: str | None) -> None:
        job_id, disk_id = self._journal.job_id, self._disk.id
        if plan.index % LOCK_RENEW_EVERY == 0:
            self._journal.renew_lock()
        if digest is None:
            self._store.record_skipped(job_id, disk_id, plan.index)
        else:
            self._store.record_chunk(job_id, disk_id, plan.index, digest, plan.bytes_to_read)
