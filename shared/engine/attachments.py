"""Disk attachments of a VM: a disk, or a disk as of a snapshot, hot-plugged into a running
VM (a backup proxy) and unplugged again."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine.polling import wait_for


@dataclass(frozen=True)
class AttachmentInfo:
    disk_id: str
    snapshot_id: str  # "" for the disk itself
    active: bool  # plugged
    read_only: bool


def listing(system: Any, vm_id: str) -> list[AttachmentInfo]:
    service = system.vms_service().vm_service(vm_id).disk_attachments_service()
    return [_info(a) for a in service.list()]


def _info(attachment: Any) -> AttachmentInfo:
    disk = attachment.disk
    snapshot = getattr(disk, "snapshot", None) if disk is not None else None
    return AttachmentInfo(
        disk_id=str(attachment.id or (disk.id if disk is not None else "")),
        snapshot_id=str(snapshot.id) if snapshot is not None and snapshot.id else "",
        active=bool(attachment.active),
        read_only=bool(attachment.read_only),
    )


def attach(
    system: Any, vm_id: str, disk_id: str, snapshot_id: str | None, *, interface: str
) -> None:
    """Plug the disk (as of `snapshot_id`, read-only, when given) into the VM."""
    disk = types.Disk(id=disk_id)
    if snapshot_id:
        disk.snapshot = types.Snapshot(id=snapshot_id)
    system.vms_service().vm_service(vm_id).disk_attachments_service().add(
        types.DiskAttachment(
            disk=disk,
            interface=types.DiskInterface(interface),
            bootable=False,
            active=True,
            read_only=bool(snapshot_id),
        )
    )


def detach(system: Any, vm_id: str, disk_id: str, timeout_s: float) -> None:
    """Unplug and detach the disk, keeping it; done when the VM no longer lists it."""
    service = system.vms_service().vm_service(vm_id).disk_attachments_service()
    with contextlib.suppress(sdk.NotFoundError):
        service.attachment_service(disk_id).remove(detach_only=True)
    wait_for(
        lambda: all(a.disk_id != disk_id for a in listing(system, vm_id)),
        timeout_s=timeout_s,
        what=f"disk {disk_id} to be detached from VM {vm_id}",
    )
