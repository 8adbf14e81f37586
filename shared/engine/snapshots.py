"""Disk-only snapshots of a VM: create, read their volumes, remove (the engine merges).

Drover's snapshots carry a description naming the job that took them, so one that an
attempt created but could not record is still found, and the reaper can tell them apart.
"""

from __future__ import annotations

from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine import convert
from shared.engine.errors import EngineOperationFailed
from shared.engine.models import SnapshotInfo, SnapshotVolume
from shared.engine.polling import wait_for

DESCRIPTION_PREFIX = "drover backup "


def description(job_id: str) -> str:
    return DESCRIPTION_PREFIX + job_id


def _service(system: Any, vm_id: str) -> Any:
    return system.vms_service().vm_service(vm_id).snapshots_service()


def add(system: Any, vm_id: str, disk_ids: list[str], text: str) -> str:
    """A disk-only snapshot of `disk_ids` (never the memory); its id, still locked."""
    spec = types.Snapshot(
        description=text,
        persist_memorystate=False,
        disk_attachments=[types.DiskAttachment(disk=types.Disk(id=d)) for d in disk_ids],
    )
    return str(_service(system, vm_id).add(spec).id)


def listing(system: Any, vm_id: str) -> list[SnapshotInfo]:
    """The VM's snapshots, the "Active VM" one left out; none when the VM is gone."""
    try:
        items = _service(system, vm_id).list()
    except sdk.NotFoundError:
        return []
    return [
        SnapshotInfo(s.id, s.description or "", convert.enum_value(s.snapshot_status))
        for s in items
        if convert.enum_value(s.snapshot_type) != "active"
    ]


def get(system: Any, vm_id: str, snapshot_id: str) -> SnapshotInfo | None:
    return next((s for s in listing(system, vm_id) if s.id == snapshot_id), None)


def wait_ok(system: Any, vm_id: str, snapshot_id: str, timeout_s: float) -> None:
    def ready() -> bool:
        snapshot = get(system, vm_id, snapshot_id)
        if snapshot is None:
            raise EngineOperationFailed(
                f"snapshot {snapshot_id} of VM {vm_id} failed: the engine removed it",
                hint="see the engine's events for the VM; retry the backup",
            )
        return snapshot.status == "ok"

    wait_for(ready, timeout_s=timeout_s, what=f"snapshot {snapshot_id} of VM {vm_id}")


def volumes(system: Any, vm_id: str, snapshot_id: str) -> dict[str, SnapshotVolume]:
    """Disk id -> the volume that holds the disk's data as of the snapshot."""
    disks = _service(system, vm_id).snapshot_service(snapshot_id).disks_service().list()
    result = {}
    for disk in disks:
        domains = disk.storage_domains or []
        result[disk.id] = SnapshotVolume(
            disk_id=disk.id,
            volume_id=disk.image_id,
            storage_domain_id=domains[0].id if domains else "",
            format="cow" if convert.enum_value(disk.format) == "cow" else "raw",
        )
    return result


def remove(system: Any, vm_id: str, snapshot_id: str, timeout_s: float) -> None:
    """Remove it and wait until the engine has merged it away; already gone is fine."""
    if get(system, vm_id, snapshot_id) is None:
        return
    try:
        _service(system, vm_id).snapshot_service(snapshot_id).remove()
    except sdk.NotFoundError:
        return
    wait_for(
        lambda: _gone_or_failed(system, vm_id, snapshot_id),
        timeout_s=timeout_s,
        what=f"snapshot {snapshot_id} of VM {vm_id} to be removed",
    )


def _gone_or_failed(system: Any, vm_id: str, snapshot_id: str) -> bool:
    snapshot = get(system, vm_id, snapshot_id)
    if snapshot is None:
        return True
    if snapshot.status == "ok":  # the merge failed and the engine unlocked it again
        raise EngineOperationFailed(
            f"removing snapshot {snapshot_id} of VM {vm_id} failed: the engine kept it",
            hint="see the engine's events for the VM; `drover reap` retries the removal",
        )
    return False
