"""One disk of a backup: engine image transfer -> imageio -> chunks in the repository.

Progress is recorded per chunk in Redis, so a re-delivered task skips what is stored.
A transfer left by a killed attempt is cancelled first: the engine allows one per disk.
"""

from __future__ import annotations

import time
from typing import Any

from shared.backup.context import JobContext
from shared.backup.copier import ChunkCopier
from shared.backup.plan import ChunkPlan, Span, plan_data_chunks, plan_dirty_chunks
from shared.engine.errors import EngineConflict
from shared.logging import get_logger
from shared.sources.imageio import ImageioSource
from shared.state import DiskProgress, StateStore

READ_CONNECTIONS = 4
CONFLICT_WAIT_S = 120.0
log = get_logger(__name__)


def transfer_disk_to_repository(
    *,
    engine: Any,
    store: StateStore,
    repo: Any,
    context: JobContext,
    disk_id: str,
    incremental: bool,
) -> dict[str, Any]:
    job_id = context.request.job_id
    disk = context.disk(disk_id)
    _cancel_stale_transfers(engine, disk_id)
    transfer = _start_transfer(engine, context.engine_backup_id, disk_id)
    store.remember_engine_object(job_id, f"transfer:{disk_id}", transfer.id)
    try:
        with ImageioSource(transfer, engine.ca_file, max_connections=READ_CONNECTIONS) as source:
            plans = _plan(source, incremental, repo.chunk_size, disk.size)
            store.plan_disk(job_id, DiskProgress(disk_id, disk.name, disk.size, len(plans)))
            stored = store.stored_chunks(job_id, disk_id)
            todo = [plan for plan in plans if plan.index not in stored]
            log.info("copying disk", planned=len(plans), already_stored=len(plans) - len(todo))
            copier = ChunkCopier(source, repo.put_chunk, repo.chunk_size, READ_CONNECTIONS)
            copier.copy(todo, lambda plan, digest: _record(store, context, disk_id, plan, digest))
        repo.sync()
        engine.finalize_transfer(transfer.id)
    except BaseException:
        _cancel_quietly(engine, transfer.id)
        raise
    return {"disk_id": disk_id, "incremental": incremental, "planned_chunks": len(plans)}


def _plan(source: ImageioSource, incremental: bool, chunk_size: int, size: int) -> list[ChunkPlan]:
    if incremental:
        dirty = [Span(e.start, e.length) for e in source.extents("dirty") if e.dirty]
        return plan_dirty_chunks(dirty, chunk_size, size)
    data = [Span(e.start, e.length) for e in source.extents("zero") if not e.zero]
    return plan_data_chunks(data, chunk_size, size)


LOCK_RENEW_EVERY = 64  # chunks


def _record(
    store: StateStore, context: JobContext, disk_id: str, plan: ChunkPlan, digest: str | None
) -> None:
    job_id = context.request.job_id
    if plan.index % LOCK_RENEW_EVERY == 0:
        store.renew_vm_lock(context.request.vm_id, job_id)
    if digest is None:
        store.record_skipped(job_id, disk_id, plan.index)
    else:
        store.record_chunk(job_id, disk_id, plan.index, digest, plan.bytes_to_read)


def _start_transfer(engine: Any, backup_id: str, disk_id: str) -> Any:
    """The disk may still be locked by a transfer being cancelled: wait for it."""
    deadline = time.monotonic() + CONFLICT_WAIT_S
    while True:
        try:
            return engine.start_transfer(disk_id=disk_id, backup_id=backup_id, direction="download")
        except EngineConflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _cancel_stale_transfers(engine: Any, disk_id: str) -> None:
    for stale in engine.open_transfers(disk_ids=[disk_id]):
        log.warning("cancelling a transfer left by an earlier attempt", transfer_id=stale.id)
        _cancel_quietly(engine, stale.id)


def _cancel_quietly(engine: Any, transfer_id: str) -> None:
    try:
        engine.cancel_transfer(transfer_id)
    except Exception as error:  # the original failure matters more
        log.warning("could not cancel transfer", transfer_id=transfer_id, error=str(error))
