"""Disk attachment mode: a worker inside a proxy VM of the VM's cluster reads the snapshot's
disks as its own block devices (the seed's "Disk attachment with Proxy VM").

Backup (full only): a disk-only snapshot (`shared.modes.snapshots`), then per disk, one at a
time (the canvas chains the disks' steps), the disk as of the snapshot attached to this
node's VM, found by its serial, read whole at device speed (zero chunks are not stored) and
detached; the snapshot is removed once the backup is committed. Excluded disks are never
attached. Restore: each new, empty disk attached to this
node, written, detached; read back the same way to verify it. Every attachment is journalled
(`shared.proxy.attach`), so whatever process dies, nothing stays attached.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.backup.context import DiskRef
from shared.backup.plan import plan_data_chunks
from shared.backup.progress import ChunkProgress
from shared.backup.transfer import copy_disk_to_repository
from shared.engine.models import DiskInfo
from shared.errors import DroverError
from shared.modes import snapshots
from shared.modes.base import DiskPlace, JobRun, Leftovers, OpenDisk, Started
from shared.proxy.attach import ThisNode, plugged, unplug_recorded
from shared.proxy.node import proxy_queue
from shared.repository.repository import Repository
from shared.sources.device import DeviceSink, DeviceSource


class DiskAttachmentMode(snapshots.SnapshotSteps):
    name = "disk_attachment"
    incremental = False
    one_disk_at_a_time = True  # a proxy VM reads the disks of a backup one by one

    def queue(self, cluster: str) -> str:
        return proxy_queue(cluster)

    def incremental_capable(self, disk: DiskInfo) -> bool:
        return False

    # backup -----------------------------------------------------------------------------
    def begin(self, run: JobRun) -> Started:
        """The snapshot is never kept: there is no incremental to take from it."""
        started = snapshots.begin(run)
        return Started(started.handle, None, incremental=False)

    def transfer_disk(self, run: JobRun, disk: DiskRef, repo: Repository) -> None:
        node, snapshot_id = ThisNode.find(), run.context.handle
        with (
            plugged(run.engine, run.journal, node, disk.id, snapshot_id) as device,
            DeviceSource(device) as source,
        ):
            plans = plan_data_chunks(source.data_spans(), run.context.chunk_size, disk.size)
            opened = OpenDisk(source, plans, source.connections)
            copy_disk_to_repository(opened, repo, ChunkProgress(run.journal, disk))

    def after_commit(self, run: JobRun) -> None:
        """Only this job's snapshot goes: one another mode keeps for its next incremental
        stays."""
        vm_id, snapshot_id = run.context.vm_id, run.context.handle
        try:
            run.engine.remove_snapshot(vm_id, snapshot_id)
        except DroverError as error:
            run.journal.warn(f"snapshot {snapshot_id} not removed: {error}")

    def cleanup(self, leftovers: Leftovers) -> None:
        """Detach what the job attached, then remove its snapshot and thaw (the engine
        refuses to remove a snapshot whose disks are attached)."""
        try:
            unplug_recorded(leftovers.engine, leftovers.recorded)
        finally:
            snapshots.cleanup(leftovers)

    # restore ----------------------------------------------------------------------------
    @contextmanager
    def open_sink(self, place: DiskPlace) -> Iterator[DeviceSink]:
        with (
            plugged(place.engine, place.journal, ThisNode.find(), place.disk_id, None) as device,
            DeviceSink(device) as sink,
        ):
            yield sink
            sink.flush()

    @contextmanager
    def open_readback(self, place: DiskPlace) -> Iterator[DeviceSource]:
        with (
            plugged(place.engine, place.journal, ThisNode.find(), place.disk_id, None) as device,
            DeviceSource(device) as source,
        ):
            yield source
