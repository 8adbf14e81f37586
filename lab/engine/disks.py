"""Disks: `disks` (list/get/add/remove/move) and `storagedomains/<id>/disks`."""

from __future__ import annotations

import logging

from ovirtsdk4 import types

from lab.dataplane import DomainKind, VolumeFormat, VolumeRef
from lab.engine import search
from lab.engine.common import created, done, limited, listing, ok, removed, sd_ref, searched
from lab.engine.context import Engine
from lab.engine.faults import bad_request, conflict, incomplete, not_found
from lab.engine.inventory import Attachment, Disk, DiskState, Inventory, Vm, VmState, new_id
from lab.engine.router import Request, Response, Router
from lab.engine.xml import href, make, parse, parse_action

log = logging.getLogger(__name__)


def register(router: Router) -> None:
    router.add("GET", "disks", list_disks)
    router.add("POST", "disks", add_disk)
    router.add("GET", "disks/{disk}", get_disk)
    router.add("DELETE", "disks/{disk}", remove_disk)
    router.add("POST", "disks/{disk}/move", move_disk)
    router.add("GET", "storagedomains/{sd}/disks", list_domain_disks)
    router.add("GET", "storagedomains/{sd}/disks/{disk}", get_domain_disk)
    router.add("DELETE", "storagedomains/{sd}/disks/{disk}", remove_domain_disk)


def disk_type(disk: Disk, volume_id: str | None = None) -> types.Disk:
    """The API view of a disk; with `volume_id`, as of that volume (a disk snapshot)."""
    volume = volume_id or disk.top
    fmt = disk.volume_format(volume) if volume in disk.chain else disk.format
    actual = _actual_size(disk, volume)
    return make(
        types.Disk,
        href("disks", disk.id),
        id=disk.id,
        name=disk.name,
        alias=disk.name,
        description=disk.description,
        format=types.DiskFormat(fmt.value),
        qcow_version=types.QcowVersion.QCOW2_V3 if fmt == VolumeFormat.COW else None,
        provisioned_size=disk.size,
        actual_size=actual,
        total_size=actual,
        sparse=disk.sparse,
        status=types.DiskStatus(disk.status.value),
        storage_type=types.DiskStorageType.IMAGE,
        image_id=volume,
        storage_domains=[sd_ref(disk.sd_id)],
        shareable=False,
        wipe_after_delete=False,
        propagate_errors=False,
        content_type=types.DiskContentType(disk.content_type),
        backup=types.DiskBackup.INCREMENTAL if disk.incremental else types.DiskBackup.NONE,
    )


def _actual_size(disk: Disk, volume_id: str) -> int:
    """A plausible allocation figure; the lab does not ask the hosts for every listing."""
    if not disk.sparse and disk.volume_format(volume_id) == VolumeFormat.RAW:
        return disk.size
    return max(disk.size // 8, 1 << 20)


def _disk_fields() -> dict[str, search.Field]:
    return {
        "name": lambda d, v: search.match(d.name, v),
        "alias": lambda d, v: search.match(d.name, v),
        "id": lambda d, v: search.match(d.id, v),
        "status": lambda d, v: search.match(d.status.value, v),
        "format": lambda d, v: search.match(d.format.value, v),
    }


def list_disks(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        disks = searched(req, inv.disks.values(), _disk_fields(), lambda d: (d.name, d.id))
        return listing([disk_type(d) for d in disks], "disks")


def get_disk(req: Request) -> Response:
    with req.engine.inventory.lock:
        return ok(disk_type(req.engine.inventory.disk(req.params["disk"])))


def list_domain_disks(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        sd = inv.domain(req.params["sd"])
        disks = [disk_type(d) for d in inv.disks.values() if d.sd_id == sd.id]
        return listing(limited(req, disks), "disks")


def get_domain_disk(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        sd = inv.domain(req.params["sd"])
        disk = inv.disk(req.params["disk"])
        if disk.sd_id != sd.id:
            raise not_found(disk.id)
        return ok(disk_type(disk))


# add
def resolve_domain(inv: Inventory, sds: list[types.StorageDomain] | None) -> str:
    if not sds:
        raise incomplete("Disk", "storage_domains")
    wanted = sds[0]
    if wanted.id:
        return inv.domain(wanted.id).id
    if wanted.name:
        return inv.domain_by_name(wanted.name).id
    raise incomplete("Disk", "storage_domains.id|name")


def new_disk_from(inv: Inventory, spec: types.Disk) -> Disk:
    """Validate an API disk and build the model (status LOCKED, one empty volume)."""
    if spec.provisioned_size is None:
        raise incomplete("Disk", "provisionedSize|size")
    if spec.format is None:
        raise incomplete("Disk", "format")
    sd_id = resolve_domain(inv, spec.storage_domains)
    fmt = VolumeFormat(spec.format.value)
    sparse = spec.sparse if spec.sparse is not None else fmt == VolumeFormat.COW
    incremental = spec.backup == types.DiskBackup.INCREMENTAL
    if incremental and fmt == VolumeFormat.RAW:
        raise bad_request(
            "Cannot add Virtual Disk. Incremental backup is not supported for RAW disks"
        )
    if fmt == VolumeFormat.RAW and sparse and inv.domain(sd_id).kind == DomainKind.BLOCK:
        raise bad_request(
            "Cannot add Virtual Disk. Disk configuration (RAW Sparse) is incompatible "
            "with the storage domain type."
        )
    disk_id = spec.id or new_id()
    if disk_id in inv.disks:
        raise conflict(f"Cannot add Virtual Disk. Disk {disk_id} already exists.")
    return Disk(
        id=disk_id,
        name=spec.name or spec.alias or f"disk-{disk_id[:8]}",
        sd_id=sd_id,
        size=spec.provisioned_size,
        base_format=fmt,
        sparse=sparse,
        incremental=incremental,
        chain=[new_id()],
        status=DiskState.LOCKED,
        description=spec.description or "",
        content_type=spec.content_type.value if spec.content_type else "data",
    )


def create_disk(engine: Engine, disk: Disk) -> None:
    """Register `disk` (LOCKED) and create its volume in the background."""
    inv = engine.inventory
    with inv.lock:
        inv.disks[disk.id] = disk

    def job() -> None:
        try:
            engine.dataplane.create_volume(disk.ref(), disk.base_format, disk.size)
            state = DiskState.OK
        except Exception:
            log.exception("creating disk %s failed", disk.id)
            state = DiskState.ILLEGAL
        with inv.lock:
            disk.status = state
            inv.changed.notify_all()

    engine.tasks.later(engine.timings.disk_op, job)


def add_disk(req: Request) -> Response:
    spec = parse(req.body, types.Disk)
    inv = req.engine.inventory
    with inv.lock:
        disk = new_disk_from(inv, spec)
        create_disk(req.engine, disk)
        return created(disk_type(disk))


# remove
def ensure_unlocked(disk: Disk, action: str) -> None:
    if disk.status == DiskState.LOCKED or disk.transfer_id is not None:
        raise conflict(
            f"Cannot {action}. Disk {disk.name} is locked. Please try again in a few minutes."
        )


def forget_disk(engine: Engine, disk: Disk) -> None:
    """Drop a disk from the model (caller holds the lock) and delete its volumes later."""
    inv = engine.inventory
    del inv.disks[disk.id]
    for vm in inv.vms.values():
        vm.attachments = [a for a in vm.attachments if a.disk_id != disk.id]
        for snap in vm.snapshots:
            snap.volumes.pop(disk.id, None)
        for checkpoint in vm.checkpoints:
            if disk.id in checkpoint.disk_ids:
                checkpoint.disk_ids.remove(disk.id)
    refs = list(reversed(disk.refs()))

    def job() -> None:
        for ref in refs:
            try:
                engine.dataplane.remove_volume(ref)
            except Exception:
                log.exception("removing volume %s failed", ref)

    engine.tasks.later(0, job)


def remove_disk(req: Request) -> Response:
    """RemoveDiskCommand.validate (validateAllVmsForDiskAreDown): refused while the disk, or
    a snapshot of it, is plugged into a VM that is not Down (VmDao.getVmsListForDisk with
    includeVmsSnapshotAttachedTo=true): ACTION_TYPE_FAILED_VM_IS_NOT_DOWN (CONFLICT: 409).
    Unplugged, or on a VM that is Down, it is removed, and its attachments with it
    (RemoveImageCommand removes every VM device of the disk)."""
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        disk = inv.disk(req.params["disk"])
        ensure_unlocked(disk, "remove Virtual Disk")
        attached = _attachments_of(inv, disk.id)
        if any(vm.status != VmState.DOWN and a.active for vm, a in attached):
            raise conflict("Cannot remove Virtual Disk. At least one of the VMs is not down.")
        devices = [(vm.name, a.device) for vm, a in attached if a.device]
    for vm_name, device in devices:  # plugged into a proxy VM that is Down: drop its device
        try:
            engine.dataplane.detach_device(vm_name, device)
        except Exception:
            log.exception("dropping device %s of %s failed", device, vm_name)
    with inv.lock:
        if disk.id in inv.disks:
            forget_disk(engine, disk)
    return removed()


def remove_domain_disk(req: Request) -> Response:
    """BackendStorageDomainDiskResource.remove: the disk's own remove."""
    with req.engine.inventory.lock:
        sd = req.engine.inventory.domain(req.params["sd"])
        if req.engine.inventory.disk(req.params["disk"]).sd_id != sd.id:
            raise not_found(req.params["disk"])
    return remove_disk(req)


def _attachments_of(inv: Inventory, disk_id: str) -> list[tuple[Vm, Attachment]]:
    """Every attachment of the disk: its own and those of its snapshots (proxy VMs)."""
    return [(vm, a) for vm in inv.vms.values() for a in vm.attachments if a.disk_id == disk_id]


# move
def move_disk(req: Request) -> Response:
    action = parse_action(req.body)
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        disk = inv.disk(req.params["disk"])
        target = resolve_domain(inv, [action.storage_domain] if action.storage_domain else None)
        ensure_unlocked(disk, "move Virtual Disk")
        if target == disk.sd_id:
            raise bad_request("Cannot move Virtual Disk. The disk is already on the target domain.")
        if len(disk.chain) > 1:
            raise conflict("Cannot move Virtual Disk. The lab moves only disks without snapshots.")
        disk.status = DiskState.LOCKED
        disk.lock_reason = "move"
    engine.tasks.later(engine.timings.disk_op, lambda: _move_job(engine, disk, target))
    return done()


def _move_job(engine: Engine, disk: Disk, target: str) -> None:
    source = disk.ref()
    destination = VolumeRef(target, disk.id, disk.top)
    try:
        engine.dataplane.copy_disk(source, destination, disk.base_format)
        engine.dataplane.remove_volume(source)
        moved = True
    except Exception:
        log.exception("moving disk %s failed", disk.id)
        moved = False
    with engine.inventory.lock:
        if moved:
            disk.sd_id = target
        disk.status = DiskState.OK
        disk.lock_reason = ""
        engine.inventory.changed.notify_all()
