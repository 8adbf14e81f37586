"""`vms/<id>/diskattachments`: attach disks, or disk snapshots (backup proxy VMs), to VMs.

On a proxy VM the attach is a hot-plug: the data plane exposes the volume as a device
named the way the guest sees it (`scsi-0QEMU_QEMU_HARDDISK_<disk id>` on VirtIO-SCSI,
`virtio-<disk id[:20]>` on VirtIO-blk). As on the engine, `logical_name` comes from the
guest agent: empty in the answer to the attach, it appears `Timings.guest_report` later.

The checks on an attach are those of the engine's AttachDiskToVmCommand.validate (bll
storage/disk), in its order, with its messages (frontend AppErrors.properties, "Cannot
attach Virtual Disk. ...") and statuses (each EngineMessage's ErrorType, mapped by the REST
API's ErrorMessageHelper: CONFLICT -> 409, BAD_PARAMETERS -> 400). A writable attachment of
a disk (not a disk snapshot) keeps what the proxy writes into its device (`writable`).
"""

from __future__ import annotations

import logging
import time

from ovirtsdk4 import types

from lab.engine.common import created, disk_ref, listing, ok, removed, vm_ref
from lab.engine.context import Engine
from lab.engine.disks import ensure_unlocked, forget_disk
from lab.engine.faults import ApiError, bad_request, conflict, incomplete, not_found
from lab.engine.inventory import Attachment, Disk, DiskState, Inventory, Vm, VmState
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


CANNOT_ATTACH = "Cannot attach Virtual Disk"
# VMStatus names as ACTION_TYPE_FAILED_VM_STATUS_ILLEGAL shows them
VM_STATUS_NAMES = {
    VmState.POWERING_UP: "PoweringUp",
    VmState.POWERING_DOWN: "PoweringDown",
    VmState.IMAGE_LOCKED: "ImageLocked",
}


def _new_attachment(inv: Inventory, vm: Vm, spec: types.DiskAttachment) -> Attachment:
    if spec.disk is None or not spec.disk.id:
        raise incomplete("DiskAttachment", "disk.id")
    if spec.interface is None:
        raise incomplete("DiskAttachment", "interface")
    interface = spec.interface.value
    # BackendDiskAttachmentsResource.attachDiskToVm: plugged only when `active` says so
    attachment = Attachment(
        disk_id=spec.disk.id,
        interface=interface,
        bootable=bool(spec.bootable),
        active=spec.active is True,
        read_only=bool(spec.read_only),
    )
    snapshot = spec.disk.snapshot
    snapshot_id = snapshot.id if snapshot is not None and snapshot.id else None
    disk = _disk_to_attach(inv, attachment, snapshot_id)
    # AttachDiskToVmCommand.validate, from here in its order
    if disk.status == DiskState.ILLEGAL:  # ACTION_TYPE_FAILED_ILLEGAL_DISK_OPERATION
        raise bad_request(
            f"{CANNOT_ATTACH}. Disk is in an illegal state. Disks in an illegal state can "
            "only be deleted."
        )
    if snapshot_id is None:
        ensure_unlocked(disk, "attach Virtual Disk")  # ACTION_TYPE_FAILED_DISKS_LOCKED
    if vm.status not in (VmState.UP, VmState.DOWN):  # isVmStatusIn(Up, Paused, Down)
        status = VM_STATUS_NAMES.get(vm.status, vm.status.value)
        raise conflict(f"{CANNOT_ATTACH} because the VM is in {status} status.")
    if attachment.bootable:  # DiskValidator.isVmNotContainsBootDisk
        boot = next((a for a in vm.attachments if a.bootable and a.snapshot_id is None), None)
        if boot is not None:  # ACTION_TYPE_FAILED_DISK_BOOT_IN_USE
            alias = inv.disks[boot.disk_id].name if boot.disk_id in inv.disks else boot.disk_id
            raise conflict(
                f"{CANNOT_ATTACH}. Disk {alias} in VM {vm.name} is already marked as boot."
            )
    if vm.attachment(disk.id) is not None:  # ACTION_TYPE_FAILED_DISK_ALREADY_ATTACHED
        raise conflict(f"{CANNOT_ATTACH}. The disk is already attached to VM.")
    if snapshot_id is None and inv.vms_of_disk(disk.id):
        # ACTION_TYPE_FAILED_NOT_SHAREABLE_DISK_ALREADY_ATTACHED (the lab has no shareable disks)
        raise conflict(
            f"{CANNOT_ATTACH}. The disk is not shareable and is already attached to a VM."
        )
    if inv.domain(disk.sd_id).dc_id != inv.cluster(vm.cluster_id).dc_id:
        # ACTION_TYPE_FAILED_STORAGE_POOL_NOT_MATCH: the disk's domain is not in the VM's pool
        raise conflict(
            f"{CANNOT_ATTACH}. The target Data Center does not contain the Virtual Disk."
        )
    if interface == "virtio_scsi" and not vm.virtio_scsi:
        # DiskVmElementValidator.isVirtIoScsiValid: CANNOT_PERFORM_ACTION_VIRTIO_SCSI_IS_DISABLED
        raise conflict(f"{CANNOT_ATTACH}. VirtIO-SCSI is disabled for the VM")
    if any(s.status == "locked" for s in vm.snapshots):  # isVmNotInPreviewSnapshot
        # SnapshotsValidator.vmNotDuringSnapshot: ACTION_TYPE_FAILED_VM_IS_DURING_SNAPSHOT
        raise conflict(
            f"{CANNOT_ATTACH}. The VM is performing an operation on a Snapshot. Please wait "
            "for the operation to finish, and try again."
        )
    return attachment


def _disk_to_attach(inv: Inventory, attachment: Attachment, snapshot_id: str | None) -> Disk:
    """The disk, bound to the volume of `snapshot_id` for a disk snapshot attachment.

    AttachDiskToVmCommand loads the disk with DiskHandler.loadDiskFromSnapshot (the disk as
    of the snapshot: DiskImageDao.getDiskSnapshotForVmSnapshot), so an unknown disk or a
    snapshot without that disk fails DiskValidator.isDiskExists; then, for a snapshot,
    SnapshotsValidator.isRegularSnapshot and isSnapshotStatusOK. The lab also makes a disk
    snapshot attachment read-only (what Drover asks for): its device is a point-in-time
    view."""
    disk = inv.disks.get(attachment.disk_id)
    if disk is None:  # ACTION_TYPE_FAILED_DISK_NOT_EXIST (BAD_PARAMETERS)
        raise bad_request(f"{CANNOT_ATTACH}. The specified disk does not exist.")
    if snapshot_id is None:
        return disk
    for owner in inv.vms_of_disk(disk.id):
        if snapshot_id == owner.active_snapshot_id:
            # ACTION_TYPE_FAILED_VM_SNAPSHOT_TYPE_NOT_REGULAR: not the "Active VM" snapshot
            raise conflict(f"{CANNOT_ATTACH}. The operation is only allowed for regular snapshots.")
        snap = next((s for s in owner.snapshots if s.id == snapshot_id), None)
        volume = snap.volumes.get(disk.id) if snap is not None else None
        if snap is None or volume is None:
            continue
        if snap.status != "ok":  # ACTION_TYPE_FAILED_INVALID_SNAPSHOT_STATUS
            raise conflict(f"{CANNOT_ATTACH}. The snapshot is in {snap.status.upper()} status.")
        attachment.snapshot_id = snapshot_id
        attachment.volume_id = volume
        attachment.read_only = True
        return disk
    raise bad_request(f"{CANNOT_ATTACH}. The specified disk does not exist.")


def _plug(engine: Engine, vm: Vm, attachment: Attachment) -> None:
    """Hot-plug on a proxy VM; on failure the attachment is dropped and 400 answered."""
    inv = engine.inventory
    with inv.lock:
        disk = inv.disk(attachment.disk_id)
        ref = disk.ref(attachment.volume_id)
        device = device_name(vm, attachment)
        writable = attachment.snapshot_id is None and not attachment.read_only
    try:
        logical_name = engine.dataplane.attach_device(vm.name, ref, device, writable)
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
    """Hot-unplug from a proxy VM; on failure (a writable device not written back) the disk
    stays plugged and 400 is answered."""
    device = attachment.device
    if device is None:
        return
    try:
        engine.dataplane.detach_device(vm.name, device)
    except Exception as exc:
        log.exception("hot-unplug of %s from %s failed", device, vm.name)
        raise ApiError(400, f"[Failed to HotUnPlugDisk: {exc}]") from None
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
