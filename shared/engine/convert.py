"""SDK objects (untyped) to the client's typed models: the only place that reads their fields."""

from __future__ import annotations

from typing import Any

from shared.engine.models import BackupInfo, DiskInfo, TransferInfo, VmInfo


def enum_value(value: Any) -> str:
    """`types.VmStatus.UP` -> "up"; None -> ""."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def ref_id(obj: Any) -> str | None:
    return str(obj.id) if obj is not None and obj.id else None


def disk_info(disk: Any, attachment: Any = None) -> DiskInfo:
    domains = disk.storage_domains or []
    return DiskInfo(
        id=disk.id,
        name=disk.name or disk.alias or disk.id,
        size=int(disk.provisioned_size or 0),
        format="cow" if enum_value(disk.format) == "cow" else "raw",
        storage_domain_id=domains[0].id if domains else "",
        image_id=disk.image_id or "",
        backup=enum_value(disk.backup) or "none",
        interface=enum_value(attachment.interface) if attachment is not None else "",
        bootable=bool(attachment.bootable) if attachment is not None else False,
        status=enum_value(disk.status),
    )


def vm_info(vm: Any, cluster_names: dict[str, str], disks: list[DiskInfo]) -> VmInfo:
    cluster_id = ref_id(vm.cluster) or ""
    return VmInfo(
        id=vm.id,
        name=vm.name,
        cluster_id=cluster_id,
        cluster_name=cluster_names.get(cluster_id, ""),
        status=enum_value(vm.status),
        disks=disks,
        tags=sorted(t.name for t in (vm.tags or []) if t.name),
        host_id=ref_id(vm.host) or "",
        virtio_scsi=vm.virtio_scsi is None or vm.virtio_scsi.enabled is not False,
    )


def backup_info(backup: Any) -> BackupInfo:
    return BackupInfo(
        id=backup.id,
        phase=enum_value(backup.phase),
        to_checkpoint_id=backup.to_checkpoint_id or None,
        from_checkpoint_id=backup.from_checkpoint_id or None,
        disk_ids=tuple(d.id for d in (backup.disks or []) if d.id),
    )


def transfer_info(transfer: Any) -> TransferInfo:
    return TransferInfo(
        id=transfer.id,
        phase=enum_value(transfer.phase),
        transfer_url=transfer.transfer_url or None,
        proxy_url=transfer.proxy_url or None,
        host_id=ref_id(transfer.host),
        disk_id=ref_id(transfer.disk),
        backup_id=ref_id(transfer.backup),
        direction=enum_value(transfer.direction),
    )
