"""What jobs left on the engine that they should not have: the thing users judge us by."""

from __future__ import annotations

from typing import Any

import ovirtsdk4.types as types

ACTIVE_SNAPSHOT = types.SnapshotType.ACTIVE
FINISHED_TRANSFER = {
    types.ImageTransferPhase.FINISHED_SUCCESS,
    types.ImageTransferPhase.FINISHED_FAILURE,
}
FINISHED_BACKUP = {types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED}


def count_leftovers(connection: Any, proxy_tag: str = "drover-proxy") -> dict[str, int]:
    system = connection.system_service()
    vms_service = system.vms_service()
    vms = vms_service.list()
    return {
        "snapshots": sum(_extra_snapshots(vms_service, vm) for vm in vms),
        "image_transfers": _open_transfers(system),
        "disk_attachments": sum(
            _foreign_attachments(vms_service, vm) for vm in _proxies(vms, proxy_tag)
        ),
        "backups": sum(_open_backups(vms_service, vm) for vm in vms),
    }


def _extra_snapshots(vms_service: Any, vm: Any) -> int:
    snapshots = vms_service.vm_service(vm.id).snapshots_service().list()
    return sum(1 for s in snapshots if s.snapshot_type != ACTIVE_SNAPSHOT)


def _open_transfers(system: Any) -> int:
    transfers = system.image_transfers_service().list()
    return sum(1 for t in transfers if t.phase not in FINISHED_TRANSFER)


def _proxies(vms: list[Any], proxy_tag: str) -> list[Any]:
    return [vm for vm in vms if proxy_tag in (vm.name or "") or proxy_tag in (vm.description or "")]


def _foreign_attachments(vms_service: Any, vm: Any) -> int:
    """Disks attached to a proxy VM beyond its own (bootable) system disk."""
    attachments = vms_service.vm_service(vm.id).disk_attachments_service().list()
    return sum(1 for a in attachments if not a.bootable)


def _open_backups(vms_service: Any, vm: Any) -> int:
    backups = vms_service.vm_service(vm.id).backups_service().list()
    return sum(1 for b in backups if b.phase not in FINISHED_BACKUP)
