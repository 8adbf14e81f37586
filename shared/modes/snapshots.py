"""The snapshot side of snapshot-chain backups (SSH mode, and image transfer without the
backup API): take a disk-only snapshot, quiesced first; keep the newest one for the next
incremental when a policy of the VM is incremental, remove it otherwise; remove what a failed
job left.

The snapshot is recorded before it is asked for ("creating:<description>", then its id): an
attempt that died in between is found by the description, which names the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from shared.backup.context import DiskRef
from shared.backup.layers import ChainBroken
from shared.engine.client import EngineClient
from shared.engine.models import DiskInfo
from shared.engine.snapshots import DESCRIPTION_PREFIX, description
from shared.errors import DroverError
from shared.logging import get_logger
from shared.modes.base import JobRun, Leftovers, Started
from shared.modes.quiesce import FROZEN, quiesced, thaw_left_frozen, thaw_quietly
from shared.repository.repository import Repository

SNAPSHOT = "snapshot"  # journal entry: "creating:<description>", then the snapshot's id
CREATING = "creating:"
log = get_logger(__name__)


def begin(run: JobRun) -> Started:
    snapshot_id = _recorded(run)
    if snapshot_id is None:
        with quiesced(run):
            snapshot_id = _take(run)
    else:
        thaw_left_frozen(run)  # an earlier attempt that died between snapshot and thaw
    keep = run.context.request.keep_snapshot
    incremental = run.context.kind == "incremental"
    return Started(snapshot_id, snapshot_id if keep else None, incremental)


def _take(run: JobRun) -> str:
    text = description(run.context.job_id)
    run.journal.record(SNAPSHOT, CREATING + text)
    context = run.context
    snapshot_id = run.engine.create_snapshot(context.vm_id, context.disk_ids, text)
    run.journal.record(SNAPSHOT, snapshot_id)
    return snapshot_id


def _recorded(run: JobRun) -> str | None:
    """The snapshot an earlier attempt of this step took, if the engine still has it."""
    recorded = run.journal.recorded(SNAPSHOT)
    if not recorded:
        return None
    engine, vm_id = run.engine, run.context.vm_id
    snapshot_id = _find(engine, vm_id, recorded)
    if snapshot_id is None:
        if not recorded.startswith(CREATING):
            run.journal.warn(f"snapshot {recorded} of an earlier attempt is gone: taking a new one")
        return None
    run.journal.record(SNAPSHOT, snapshot_id)
    engine.wait_snapshot(vm_id, snapshot_id)
    return snapshot_id


def _find(engine: EngineClient, vm_id: str, recorded: str) -> str | None:
    for snapshot in engine.snapshots(vm_id):
        if snapshot.id == recorded or CREATING + snapshot.description == recorded:
            return snapshot.id
    return None


@dataclass(frozen=True)
class ChainBounds:
    top: str  # the volume holding the disk's data as of this backup's snapshot
    stop: str | None = None  # incremental: the kept snapshot's volume, which is not read
    parent_chunks: dict[int, str] = field(default_factory=dict)  # what lies below `stop`


def chain_bounds(run: JobRun, disk: DiskRef, repo: Repository) -> ChainBounds:
    """Which part of the disk's chain this backup reads, and the chunks below it."""
    context, engine = run.context, run.engine
    top = engine.snapshot_volumes(context.vm_id, context.handle)[disk.id].volume_id
    if not (disk.incremental and context.from_anchor and context.parent_id):
        return ChainBounds(top)
    below = engine.snapshot_volumes(context.vm_id, context.from_anchor)
    parent = repo.manifest(context.parent_id).disk(disk.id)
    return ChainBounds(top, below[disk.id].volume_id, parent.chunks)


@contextmanager
def stale_anchor_dropped(run: JobRun) -> Iterator[None]:
    """A disk's chain that no longer holds the kept snapshot's volume (the VM went back to
    an older snapshot) cannot take an incremental from it: the kept snapshot is removed, so
    the next backup, finding no anchor, is a full one."""
    try:
        yield
    except ChainBroken as error:
        anchor, vm_id = run.context.from_anchor, run.context.vm_id
        if anchor:
            try:
                run.engine.remove_snapshot(vm_id, anchor)
            except DroverError as removal:
                log.warning("could not remove the stale kept snapshot", error=str(removal))
        raise ChainBroken(
            f"{error.message}: the chain changed since the last backup",
            hint="the kept snapshot was removed: the next backup of the VM is a full one",
        ) from error


def anchor_exists(engine: EngineClient, vm_id: str, anchor: str) -> bool:
    return any(s.id == anchor and s.status == "ok" for s in engine.snapshots(vm_id))


def after_commit(run: JobRun) -> None:
    """Only the newest kept snapshot is needed; older ones cost the VM a longer chain (the
    engine merges each one away). Snapshots Drover did not take are never touched."""
    keep = run.context.anchor
    vm_id = run.context.vm_id
    for snapshot in run.engine.snapshots(vm_id):
        if snapshot.description.startswith(DESCRIPTION_PREFIX) and snapshot.id != keep:
            try:
                run.engine.remove_snapshot(vm_id, snapshot.id)
            except DroverError as error:
                run.journal.warn(f"snapshot {snapshot.id} not removed: {error}")


def cleanup(leftovers: Leftovers) -> None:
    """Remove the job's snapshot, thaw if frozen (even when the removal failed)."""
    engine, vm_id = leftovers.engine, leftovers.vm_id
    try:
        recorded = leftovers.recorded.get(SNAPSHOT, "")
        snapshot_id = _find(engine, vm_id, recorded) if recorded else None
        if snapshot_id is not None:
            log.info("removing the snapshot of a failed job", snapshot_id=snapshot_id)
            engine.remove_snapshot(vm_id, snapshot_id)
    finally:
        if leftovers.recorded.get(FROZEN):
            thaw_quietly(engine, vm_id)


class SnapshotSteps:
    """The steps every snapshot-chain mode takes the same way (a mixin for its mode class)."""

    incremental = True
    anchor_name = "snapshot"
    one_disk_at_a_time = False

    def incremental_capable(self, disk: DiskInfo) -> bool:
        return True  # every snapshot adds a qcow2 layer, whatever the disk's format

    def begin(self, run: JobRun) -> Started:
        return begin(run)

    def finish(self, run: JobRun) -> None:
        return None  # the snapshot stays until the backup is committed

    def after_commit(self, run: JobRun) -> None:
        after_commit(run)

    def anchor_exists(self, engine: EngineClient, vm_id: str, anchor: str) -> bool:
        return anchor_exists(engine, vm_id, anchor)
