"""Image transfer mode: the engine's backup API (4.4+) and ovirt-imageio.

Begin starts an engine backup (from the parent's checkpoint for an incremental) under an id
chosen and recorded first; each disk is read through an image transfer of that backup (the
host's imageio daemon, or the engine's proxy); finish finalizes the backup; after the commit
only the newest checkpoint is kept. Restore writes and reads disks through image transfers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from shared.backup.context import DiskRef
from shared.backup.plan import ChunkPlan, Span, plan_data_chunks, plan_dirty_chunks
from shared.backup.progress import ChunkProgress
from shared.backup.transfer import copy_disk_to_repository
from shared.engine.client import EngineClient
from shared.engine.errors import CheckpointInvalid, EngineConflict
from shared.engine.models import BackupInfo, DiskInfo, EngineVersion, TransferInfo
from shared.errors import ConfigError, DroverError
from shared.logging import get_logger
from shared.modes import snapshots
from shared.modes.base import DiskPlace, JobRun, Leftovers, OpenDisk, Started
from shared.modes.quiesce import quiesced, thaw_left_frozen
from shared.repository.repository import Repository
from shared.sources.imageio import ImageioSink, ImageioSource

QUEUE = "transfer.image"
READ_CONNECTIONS = 4
WRITE_CONNECTIONS = 4
CONFLICT_WAIT_S = 120.0
BACKUP = "backup"  # journal entry: the engine backup's id
BACKUP_API = EngineVersion(4, 4)
log = get_logger(__name__)


class ImageTransferMode:
    name = "image_transfer"
    incremental = True
    anchor_name = "checkpoint"
    one_disk_at_a_time = False

    def queue(self, cluster: str) -> str:
        return QUEUE

    def incremental_capable(self, disk: DiskInfo) -> bool:
        return disk.backup == "incremental"  # the engine tracks its changed blocks

    # backup -----------------------------------------------------------------------------
    def begin(self, run: JobRun) -> Started:
        backup = _recorded_backup(run)
        if backup is None:
            with quiesced(run):
                backup, why_full = _start_backup(run)
        else:
            why_full = ""
            thaw_left_frozen(run)  # an earlier attempt that died between backup and thaw
        incremental = backup.from_checkpoint_id is not None
        return Started(backup.id, backup.to_checkpoint_id, incremental, why_full)

    def transfer_disk(self, run: JobRun, disk: DiskRef, repo: Repository) -> None:
        with self._open_disk(run, disk) as opened:
            copy_disk_to_repository(opened, repo, ChunkProgress(run.journal, disk))

    @contextmanager
    def _open_disk(self, run: JobRun, disk: DiskRef) -> Iterator[OpenDisk]:
        engine, chunk_size = run.engine, run.context.chunk_size
        cancel_stale_transfers(engine, disk.id)
        run.journal.record(f"transfer:{disk.id}", "starting")
        transfer = start_transfer(engine, disk.id, backup_id=run.context.handle)
        run.journal.record(f"transfer:{disk.id}", transfer.id)
        with (
            finalized_or_cancelled(engine, transfer.id),
            ImageioSource(transfer, engine.ca_file, max_connections=READ_CONNECTIONS) as source,
        ):
            plans = _plan(source, disk, chunk_size)
            yield OpenDisk(source, plans, source.connections)

    def finish(self, run: JobRun) -> None:
        run.engine.finalize_backup(run.context.vm_id, run.context.handle)

    def after_commit(self, run: JobRun) -> None:
        """Only the newest checkpoint is needed for the next incremental; older ones cost the
        hypervisor a dirty bitmap each. The engine removes them oldest (root) first."""
        newest, vm_id = run.context.anchor, run.context.vm_id
        if not newest:
            return
        for checkpoint in run.engine.checkpoints(vm_id):
            if checkpoint == newest:
                return
            try:
                run.engine.remove_checkpoint(vm_id, checkpoint)
            except DroverError as error:
                run.journal.warn(f"old checkpoint {checkpoint} not removed: {error}")
                return

    def cleanup(self, leftovers: Leftovers) -> None:
        cleanup(leftovers)

    def anchor_exists(self, engine: EngineClient, vm_id: str, anchor: str) -> bool:
        return anchor in engine.checkpoints(vm_id)

    # restore ----------------------------------------------------------------------------
    @contextmanager
    def open_sink(self, place: DiskPlace) -> Iterator[ImageioSink]:
        engine = place.engine
        _check_can_upload(engine, place)
        transfer = start_transfer(engine, place.disk_id, direction="upload")
        with (
            finalized_or_cancelled(engine, transfer.id),
            ImageioSink(transfer, engine.ca_file, max_connections=WRITE_CONNECTIONS) as sink,
        ):
            yield sink
            sink.flush()

    @contextmanager
    def open_readback(self, place: DiskPlace) -> Iterator[ImageioSource]:
        engine = place.engine
        transfer = start_transfer(engine, place.disk_id)
        with (
            finalized_or_cancelled(engine, transfer.id),
            ImageioSource(transfer, engine.ca_file) as source,
        ):
            yield source


def cleanup(leftovers: Leftovers) -> None:
    """Cancel the job's transfers, finalize the VM's open backups, remove the job's snapshot
    (the snapshot-chain flavour), thaw if frozen (even when the rest failed: a guest must
    never stay frozen)."""
    try:
        leftovers.engine.cleanup_vm(leftovers.vm_id, leftovers.disk_ids)
    finally:
        snapshots.cleanup(leftovers)


def _check_can_upload(engine: EngineClient, place: DiskPlace) -> None:
    """Before 4.4, imageio wrote an upload's bytes into the volume file as they came: a
    qcow2 disk would get raw guest data. Only the NBD backend (4.4+) converts."""
    version = engine.version()
    if place.format == "cow" and version < BACKUP_API:
        raise ConfigError(
            f"engine {version} cannot take a qcow2 disk's data through image transfer "
            "(it writes the volume file as it comes; 4.4+ converts)",
            hint="restore with mode ssh (register the hosts' SSH credentials), or upgrade "
            "the engine to 4.4 or later",
        )


def _recorded_backup(run: JobRun) -> BackupInfo | None:
    """The engine backup a re-delivered start recorded, if the engine still serves it."""
    backup_id = run.journal.recorded(BACKUP)
    if not backup_id:
        return None
    backup = run.engine.backup(run.context.vm_id, backup_id)
    if backup is None or backup.phase in ("finalizing", "succeeded", "failed"):
        run.journal.warn(
            f"engine backup {backup_id} of an earlier attempt is gone "
            f"({backup.phase if backup else 'not found'}): starting a new one"
        )
        return None
    if backup.phase != "ready":
        raise EngineConflict(f"engine backup {backup_id} is still {backup.phase}", hint="retry")
    return backup


def _start_backup(run: JobRun) -> tuple[BackupInfo, str]:
    """The new engine backup, and why it is full when an incremental was asked for."""
    context = run.context
    checkpoint = context.from_anchor if context.kind == "incremental" else None
    if checkpoint is None:
        return _add_backup(run, None), ""
    try:
        return _add_backup(run, checkpoint), ""
    except CheckpointInvalid as error:
        return _add_backup(run, None), f"checkpoint chain broken ({error.message})"


def _add_backup(run: JobRun, from_checkpoint: str | None) -> BackupInfo:
    backup_id = str(uuid.uuid4())
    run.journal.record(BACKUP, backup_id)  # before it exists: cleanup finds it after a crash
    context = run.context
    return run.engine.start_backup(
        context.vm_id, context.disk_ids, from_checkpoint, backup_id=backup_id
    )


def _plan(source: ImageioSource, disk: DiskRef, chunk_size: int) -> list[ChunkPlan]:
    if disk.incremental:
        dirty = [Span(e.start, e.length) for e in source.extents("dirty") if e.dirty]
        return plan_dirty_chunks(dirty, chunk_size, disk.size)
    data = [Span(e.start, e.length) for e in source.extents("zero") if not e.zero]
    return plan_data_chunks(data, chunk_size, disk.size)


def start_transfer(
    engine: EngineClient,
    disk_id: str,
    *,
    backup_id: str | None = None,
    direction: str = "download",
    snapshot_id: str | None = None,
    fmt: str = "raw",
) -> TransferInfo:
    """The disk may still be locked by a transfer being cancelled: wait for it."""
    deadline = time.monotonic() + CONFLICT_WAIT_S
    while True:
        try:
            return engine.start_transfer(
                disk_id=disk_id,
                backup_id=backup_id,
                direction=direction,
                snapshot_id=snapshot_id,
                fmt=fmt,
            )
        except EngineConflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def cancel_stale_transfers(engine: EngineClient, disk_id: str) -> None:
    """The engine allows one transfer per disk; one left by a killed attempt goes first."""
    for stale in engine.open_transfers(disk_ids=[disk_id]):
        log.warning("cancelling a transfer left by an earlier attempt", transfer_id=stale.id)
        _cancel_quietly(engine, stale.id)


@contextmanager
def finalized_or_cancelled(engine: EngineClient, transfer_id: str) -> Iterator[None]:
    """Finalize the transfer when the block succeeds; cancel it when it fails, keeping the
    block's error (a failed cancel is logged, never raised in its place)."""
    try:
        yield
    except BaseException:
        _cancel_quietly(engine, transfer_id)
        raise
    engine.finalize_transfer(transfer_id)


def _cancel_quietly(engine: EngineClient, transfer_id: str) -> None:
    try:
        engine.cancel_transfer(transfer_id)
    except Exception as error:
        log.warning("could not cancel transfer", transfer_id=transfer_id, error=str(error))
