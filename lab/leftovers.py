"""What jobs left on the engine that they should not have: the thing users judge us by.

A snapshot-chain backup (mode ssh) keeps its snapshot on the VM for the next incremental, on
purpose: the newest such backup of a VM names it as its `checkpoint_id`. Those kept snapshots
are passed in as `kept` (VM id -> snapshot id, from `kept_snapshot_anchors`) and counted apart
(`kept_snapshots`); any other snapshot, a second Drover snapshot on the same VM included, is a
leftover.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine.snapshots import DESCRIPTION_PREFIX

ACTIVE_SNAPSHOT = types.SnapshotType.ACTIVE
FINISHED_TRANSFER = {
    types.ImageTransferPhase.FINISHED_SUCCESS,
    types.ImageTransferPhase.FINISHED_FAILURE,
}
FINISHED_BACKUP = {types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED}
# modes whose backups' checkpoint_id may be a kept snapshot: image transfer's is one through
# snapshot chains and an engine checkpoint through the backup API, which no snapshot id matches
SNAPSHOT_ANCHOR_MODES = ("ssh", "image_transfer")


def count_leftovers(
    connection: Any, proxy_tag: str = "drover-proxy", kept: Mapping[str, str] | None = None
) -> dict[str, int]:
    """`kept`: VM id -> the snapshot a backup keeps on purpose (not counted here)."""
    system = connection.system_service()
    vms_service = system.vms_service()
    vms = vms_service.list()
    kept = kept or {}
    return {
        "snapshots": sum(_extra_snapshots(vms_service, vm, kept.get(vm.id)) for vm in vms),
        "image_transfers": _open_transfers(system),
        "disk_attachments": sum(
            _foreign_attachments(vms_service, vm) for vm in _proxies(vms, proxy_tag)
        ),
        "backups": sum(_open_backups(vms_service, vm) for vm in vms),
    }


def kept_snapshots(connection: Any, kept: Mapping[str, str]) -> dict[str, str]:
    """VM name -> id of its kept snapshot, for the VMs of `kept` that still have it."""
    vms_service = connection.system_service().vms_service()
    found = {}
    for vm in vms_service.list():
        snapshot_id = kept.get(vm.id)
        if snapshot_id and any(s.id == snapshot_id for s in _snapshots(vms_service, vm)):
            found[vm.name] = snapshot_id
    return found


def kept_snapshot_anchors(
    backups: Iterable[Mapping[str, Any]], modes: Iterable[str] = SNAPSHOT_ANCHOR_MODES
) -> dict[str, str]:
    """VM id -> the snapshot its newest snapshot-chain backup keeps (`checkpoint_id`).

    `backups` as the API's `GET /backups` lists them (or manifest summaries as dicts). Only
    the newest one counts: every such backup removes the VM's older Drover snapshots once it
    is committed, and one that keeps none (no incremental policy) leaves none."""
    newest: dict[str, Mapping[str, Any]] = {}
    snapshot_modes = set(modes)
    for backup in backups:
        if backup.get("mode") not in snapshot_modes:
            continue
        vm_id = str(backup["vm_id"])
        # ties (created_at is to the second) go to the later one: the listing is oldest first
        if vm_id not in newest or backup["created_at"] >= newest[vm_id]["created_at"]:
            newest[vm_id] = backup
    return {vm: str(b["checkpoint_id"]) for vm, b in newest.items() if b.get("checkpoint_id")}


def _snapshots(vms_service: Any, vm: Any) -> list[Any]:
    snapshots = vms_service.vm_service(vm.id).snapshots_service().list()
    return [s for s in snapshots if s.snapshot_type != ACTIVE_SNAPSHOT]


def _extra_snapshots(vms_service: Any, vm: Any, kept: str | None) -> int:
    return sum(1 for s in _snapshots(vms_service, vm) if not _is_kept(s, kept))


def _is_kept(snapshot: Any, kept: str | None) -> bool:
    return (
        kept is not None
        and snapshot.id == kept
        and (snapshot.description or "").startswith(DESCRIPTION_PREFIX)
    )


def _open_transfers(system: Any) -> int:
    transfers = system.image_transfers_service().list()
    return sum(1 for t in transfers if t.phase not in FINISHED_TRANSFER)


def _proxies(vms: list[Any], proxy_tag: str) -> list[Any]:
    return [
        vm
        for vm in vms
        if any(proxy_tag in (text or "") for text in (vm.name, vm.description, vm.comment))
    ]


def _foreign_attachments(vms_service: Any, vm: Any) -> int:
    """Disks attached to a proxy VM beyond its own system disk, plugged or not: disk
    snapshots a backup read, disks a restore wrote. The system disk is the proxy's bootable
    disk (the engine refuses a second boot disk: AttachDiskToVmCommand,
    ACTION_TYPE_FAILED_DISK_BOOT_IN_USE); a disk snapshot is never it."""
    attachments = vms_service.vm_service(vm.id).disk_attachments_service().list()
    own = next((a for a in attachments if a.bootable and not _is_disk_snapshot(a)), None)
    return sum(1 for a in attachments if a is not own)


def _is_disk_snapshot(attachment: Any) -> bool:
    snapshot = getattr(attachment.disk, "snapshot", None) if attachment.disk else None
    return snapshot is not None and bool(snapshot.id)


def _open_backups(vms_service: Any, vm: Any) -> int:
    try:
        backups = vms_service.vm_service(vm.id).backups_service().list()
    except sdk.NotFoundError:  # an engine before 4.4 has no backups
        return 0
    return sum(1 for b in backups if b.phase not in FINISHED_BACKUP)
