"""`vms/<id>/diskattachments`: attach disks, or disk snapshots (backup proxy VMs), to VMs.

On a proxy VM the attach is a hot-plug: the data plane exposes the volume as a device
named the way the guest sees it (`scsi-0QEMU_QEMU_HARDDISK_<disk id>` on VirtIO-SCSI,
`virtio-<disk id[:20]>` on VirtIO-blk). As on the engine, `logical_name` comes from the
guest agent: empty in the answer to the attach, it appears `Timings.guest_report` later.
"""

from __future__ import annotations

import logging
import time

from ovirtsdk4 import types

from lab.engine.common import created, disk_ref, listing, ok, removed, vm_ref
from lab.engine.context import Engine
from lab.engine.disks import ensure_unlocked, forget_disk
from lab.engine.faults import ApiError, bad_request, conflict, incomplete, not_found
from lab.engine.inventory import Attachment, Inventory, Vm
from lab.engine.router import Request, Response, Router
from lab.engine.xml import href, make, parse

log = logging.getLogger(__name__)


def register(router: Router) -> None:
    router.add("GET", "vms/{vm}/diskattachments", list_attachments)
    router.add("POST", "vms/{vm}/diskattachments", add_attachment)
    router.add("GET", "vms/{vm}/diskattachments/{disk}", get_attachment)
    router.add("PUT", "vms/{vm}/diskattachments/{disk}", update_attachment)
    router.add("DELETE", "vms/{vm}/diskattachments/{disk}", remove_attachment)


def device_name(vm: Vm, attachment: Attachment) -> str:
    if attachment.interface == "virtio_scsi" and vm.virtio_scsi:
        return f"scsi-0QEMU_QEMU_HARDDISK_{attachment.disk_id}"
    return f"virtio-{attachment.disk_id[:20]}"


def attachment_type(vm: Vm, attachment: Attachment) -> types.DiskAttachment:
    disk = disk_ref(attachment.disk_id)
    if attachment.snapshot_id is not None:
        disk.snapshot = types.Snapshot(id=attachment.snapshot_id)
    return make(
        types.DiskAttachment,
        href("vms", vm.id, "diskattachments", attachment.disk_id),
        id=attachment.disk_id,
        disk=disk,
        vm=vm_ref(vm.id),
        interface=types.DiskInterface(attachment.interface),
        bootable=attachment.bootable,
        active=attachment.active,
        logical_name=attachment.logical_name if _reported(vm, attachment) else None,
        pass_discard=False,
        read_only=attachment.read_only,
        uses_scsi_reservation=False,
    )


def _reported(vm: Vm, attachment: Attachment) -> bool:
    """Has the guest agent reported the attachment's device name yet?"""
    if not vm.running or not vm.guest_agent or attachment.reported_at is None:
        return False
    return time.time() >= attachment.reported_at


def _attachment(vm: Vm, disk_id: str) -> Attachment:
    attachment = vm.attachment(disk_id)
    if attachment is None:
        raise not_found(disk_id)
    return attachment


def list_attachments(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        return listing([attachment_type(vm, a) for a in vm.attachments], "disk_attachments")


def get_attachment(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        return ok(attachment_type(vm, _attachment(vm, req.params["disk"])))


# add
def add_attachment(req: Request) -> Response:
    spec = parse(req.body, types.DiskAttachment)
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        attachment = _new_attachment(inv, vm, spec)
        vm.attachments.append(attachment)
        plug = attachment.active and vm.running and vm.is_proxy
    if plug:
        _plug(engine, vm, attachment)
    with inv.lock:
        return created(attachment_type(vm, attachment))


def _new_attachment(inv: Inventory, vm: Vm, spec: types.DiskAttachment) -> Attachment:
    if spec.disk is None or not spec.disk.id:
        raise incomplete("DiskAttachment", "disk.id")
    if spec.interface is None:
        raise incomplete("DiskAttachment", "interface")
    disk = inv.disk(spec.disk.id)
    if vm.attachment(disk.id) is not None:
        raise conflict("Cannot attach Virtual Disk. The disk is already attached to the VM.")
    interface = spec.interface.value
    if interface == "virtio_scsi" and not vm.virtio_scsi:
        raise bad_request("Cannot attach Virtual Disk. VirtIO-SCSI is disabled for the VM")
    attachment = Attachment(
        disk_id=disk.id,
        interface=interface,
        bootable=bool(spec.bootable),
        active=spec.active is not False,
        read_only=bool(spec.read_only),
    )
    snapshot = spec.disk.snapshot
    if snapshot is not None and snapshot.id:
        _bind_snapshot(inv, attachment, snapshot.id)
    else:
        ensure_unlocked(disk, "attach Virtual Disk")
        if inv.vms_of_disk(disk.id):
            raise conflict(
                "Cannot attach Virtual Disk. The disk is not shareable and is already "
                "attached to a VM."
            )
    return attachment


def _bind_snapshot(inv: Inventory, attachment: Attachment, snapshot_id: str) -> None:
    """A disk snapshot attachment: the volume of `snapshot_id` for the disk, read-only."""
    for owner in inv.vms_of_disk(attachment.disk_id):
        for snap in owner.snapshots:
            if snap.id == snapshot_id:
                volume = snap.volumes.get(attachment.disk_id)
                if volume is None:
                    break
                if snap.status != "ok":
                    raise conflict("Cannot attach Virtual Disk. The snapshot is locked.")
                attachment.snapshot_id = snapshot_id
                attachment.volume_id = volume
                attachment.read_only = True
                return
    raise not_found(snapshot_id)


def _plug(engine: Engine, vm: Vm, attachment: Attachment) -> None:
    """Hot-plug on a proxy VM; on failure the attachment is dropped and 400 answered."""
    inv = engine.inventory
    with inv.lock:
        disk = inv.disk(attachment.disk_id)
        ref = disk.ref(attachment.volume_id)
        device = device_name(vm, attachment)
    try:
        logical_name = engine.dataplane.attach_device(vm.name, ref, device)
    except Exception as exc:
        log.exception("hot-plug of %s into %s failed", device, vm.name)
        with inv.lock:
            if attachment in vm.attachments:
                vm.attachments.remove(attachment)
        raise ApiError(400, f"[Failed to HotPlugDisk: {exc}]") from None
    with inv.lock:
        attachment.device = device
        attachment.logical_name = logical_name or f"/dev/disk/by-id/{device}"
        attachment.reported_at = time.time() + engine.timings.guest_report


def _unplug(engine: Engine, vm: Vm, attachment: Attachment) -> None:
    device = attachment.device
    if device is None:
        return
    engine.dataplane.detach_device(vm.name, device)
    with engine.inventory.lock:
        attachment.device = None
        attachment.logical_name = None
        attachment.reported_at = None


# update (activate / deactivate) and remove
def update_attachment(req: Request) -> Response:
    spec = parse(req.body, types.DiskAttachment)
    engine = req.engine
    with engine.inventory.lock:
        vm = engine.inventory.vm(req.params["vm"])
        attachment = _attachment(vm, req.params["disk"])
        if spec.bootable is not None:
            attachment.bootable = spec.bootable
        change = spec.active is not None and spec.active != attachment.active
        if change:
            attachment.active = bool(spec.active)
        proxy_running = vm.is_proxy and vm.running
    if change and proxy_running:
        if attachment.active:
            _plug(engine, vm, attachment)
        else:
            _unplug(engine, vm, attachment)
    with engine.inventory.lock:
        return ok(attachment_type(vm, attachment))


def remove_attachment(req: Request) -> Response:
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        attachment = _attachment(vm, req.params["disk"])
        delete_disk = req.query.get("detach_only", "true").lower() == "false"
        if attachment.snapshot_id is None:
            ensure_unlocked(inv.disk(attachment.disk_id), "detach Virtual Disk")
    _unplug(engine, vm, attachment)
    with inv.lock:
        if attachment in vm.attachments:
            vm.attachments.remove(attachment)
        if delete_disk and attachment.snapshot_id is None and attachment.disk_id in inv.disks:
            forget_disk(engine, inv.disks[attachment.disk_id])
    return removed()
