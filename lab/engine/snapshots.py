"""VM snapshots (`vms/<id>/snapshots`), their disks, and `storagedomains/<id>/disksnapshots`.

Taking a snapshot turns each included disk's active volume into the snapshot's volume
and puts a new qcow2 overlay on top; removing one merges its volume's child into it.
"""

from __future__ import annotations

import logging

from ovirtsdk4 import types

from lab.dataplane import VolumeFormat
from lab.engine.common import created, disk_ref, limited, listing, ok, removed, vm_ref
from lab.engine.context import Engine
from lab.engine.disks import disk_type, ensure_unlocked
from lab.engine.faults import bad_request, conflict, incomplete, not_found
from lab.engine.inventory import Disk, DiskState, Inventory, Snapshot, Vm, VmState, new_id
from lab.engine.router import Request, Response, Router
from lab.engine.xml import href, make, parse, timestamp

log = logging.getLogger(__name__)
ACTIVE_DESCRIPTION = "Active VM"


def register(router: Router) -> None:
    router.add("GET", "vms/{vm}/snapshots", list_snapshots)
    router.add("POST", "vms/{vm}/snapshots", add_snapshot)
    router.add("GET", "vms/{vm}/snapshots/{snap}", get_snapshot)
    router.add("DELETE", "vms/{vm}/snapshots/{snap}", remove_snapshot)
    router.add("GET", "vms/{vm}/snapshots/{snap}/disks", list_snapshot_disks)
    router.add("GET", "vms/{vm}/snapshots/{snap}/disks/{disk}", get_snapshot_disk)
    router.add("GET", "storagedomains/{sd}/disksnapshots", list_disk_snapshots)
    router.add("GET", "storagedomains/{sd}/disksnapshots/{volume}", get_disk_snapshot)
    router.add("GET", "disks/{disk}/disksnapshots", list_snapshots_of_disk)
    router.add("GET", "disks/{disk}/disksnapshots/{volume}", get_snapshot_of_disk)


# views
def snapshot_type(vm: Vm, snap: Snapshot | None) -> types.Snapshot:
    """`snap=None` is the VM's "Active VM" snapshot."""
    snap_id = snap.id if snap else vm.active_snapshot_id
    return make(
        types.Snapshot,
        href("vms", vm.id, "snapshots", snap_id),
        id=snap_id,
        description=snap.description if snap else ACTIVE_DESCRIPTION,
        snapshot_status=types.SnapshotStatus(snap.status if snap else "ok"),
        snapshot_type=types.SnapshotType.REGULAR if snap else types.SnapshotType.ACTIVE,
        date=timestamp(snap.date if snap else vm.creation_time),
        persist_memorystate=snap.persist_memorystate if snap else False,
        vm=vm_ref(vm.id),
    )


def _find(vm: Vm, snap_id: str) -> Snapshot | None:
    if snap_id == vm.active_snapshot_id:
        return None
    return vm.snapshot(snap_id)


def snapshot_volumes(inv: Inventory, vm: Vm, snap: Snapshot | None) -> dict[str, str]:
    if snap is not None:
        return dict(snap.volumes)
    return {d: inv.disks[d].top for d in vm.own_disk_ids() if d in inv.disks}


def list_snapshots(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        snaps = [snapshot_type(vm, None)] + [snapshot_type(vm, s) for s in vm.snapshots]
        return listing(limited(req, snaps), "snapshots")


def get_snapshot(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        return ok(snapshot_type(vm, _find(vm, req.params["snap"])))


def _snapshot_disk_type(vm: Vm, snap_id: str, disk: Disk, volume: str) -> types.Disk:
    obj = disk_type(disk, volume)
    obj.href = href("vms", vm.id, "snapshots", snap_id, "disks", disk.id)
    obj.snapshot = make(
        types.Snapshot,
        href("vms", vm.id, "snapshots", snap_id),
        id=snap_id,
    )
    return obj


def list_snapshot_disks(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        snap_id = req.params["snap"]
        volumes = snapshot_volumes(inv, vm, _find(vm, snap_id))
        disks = [
            _snapshot_disk_type(vm, snap_id, inv.disks[d], v)
            for d, v in volumes.items()
            if d in inv.disks
        ]
        return listing(disks, "disks")


def get_snapshot_disk(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        snap_id = req.params["snap"]
        volumes = snapshot_volumes(inv, vm, _find(vm, snap_id))
        disk_id = req.params["disk"]
        if disk_id not in volumes or disk_id not in inv.disks:
            raise not_found(disk_id)
        return ok(_snapshot_disk_type(vm, snap_id, inv.disks[disk_id], volumes[disk_id]))


# disk snapshots of a storage domain
def _owner_snapshot_id(inv: Inventory, disk: Disk, volume: str) -> str | None:
    for vm in inv.vms_of_disk(disk.id):
        if volume == disk.top:
            return vm.active_snapshot_id
        for snap in vm.snapshots:
            if snap.volumes.get(disk.id) == volume:
                return snap.id
    return None


def disk_snapshot_type(inv: Inventory, disk: Disk, volume: str) -> types.DiskSnapshot:
    view = disk_type(disk, volume)
    index = disk.chain.index(volume)
    snap_id = _owner_snapshot_id(inv, disk, volume)
    return make(
        types.DiskSnapshot,
        href("storagedomains", disk.sd_id, "disksnapshots", volume),
        id=volume,
        name=disk.name,
        alias=disk.name,
        description=disk.description,
        format=view.format,
        provisioned_size=disk.size,
        actual_size=view.actual_size,
        total_size=view.total_size,
        sparse=disk.sparse,
        status=view.status,
        image_id=volume,
        storage_type=types.DiskStorageType.IMAGE,
        content_type=view.content_type,
        storage_domains=[
            make(
                types.StorageDomain,
                href("storagedomains", disk.sd_id),
                id=disk.sd_id,
            )
        ],
        disk=disk_ref(disk.id),
        snapshot=types.Snapshot(id=snap_id) if snap_id else None,
        parent=types.DiskSnapshot(id=disk.chain[index - 1]) if index > 0 else None,
    )


def _domain_volumes(req: Request, inv: Inventory) -> list[tuple[Disk, str]]:
    sd = inv.domain(req.params["sd"])
    include_active = req.flag("include_active")
    result = []
    for disk in inv.disks.values():
        if disk.sd_id != sd.id:
            continue
        for volume in disk.chain:
            if volume != disk.top or include_active:
                result.append((disk, volume))
    return result


def list_disk_snapshots(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        items = [disk_snapshot_type(inv, d, v) for d, v in _domain_volumes(req, inv)]
        return listing(limited(req, items), "disk_snapshots")


def get_disk_snapshot(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        sd = inv.domain(req.params["sd"])
        disk, _, _ = inv.owner_of_volume(req.params["volume"])
        if disk.sd_id != sd.id:
            raise not_found(req.params["volume"])
        return ok(disk_snapshot_type(inv, disk, req.params["volume"]))


# disk snapshots of a disk (BackendDiskSnapshotsResource)
def _of_disk(inv: Inventory, disk: Disk, volume: str) -> types.DiskSnapshot:
    view = disk_snapshot_type(inv, disk, volume)
    view.href = href("disks", disk.id, "disksnapshots", volume)
    return view


def list_snapshots_of_disk(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        disk = inv.disk(req.params["disk"])
        include_active = req.flag("include_active")
        volumes = [v for v in disk.chain if v != disk.top or include_active]
        return listing(limited(req, [_of_disk(inv, disk, v) for v in volumes]), "disk_snapshots")


def get_snapshot_of_disk(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        disk = inv.disk(req.params["disk"])
        if req.params["volume"] not in disk.chain:
            raise not_found(req.params["volume"])
        return ok(_of_disk(inv, disk, req.params["volume"]))


# add
def add_snapshot(req: Request) -> Response:
    spec = parse(req.body, types.Snapshot)
    if spec.description is None:  # BackendSnapshotsResource: validateParameters
        raise incomplete("Snapshot", "description")
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        disks = _disks_to_snapshot(inv, vm, spec)
        _check_can_snapshot(inv, vm, disks, "create")
        snap = Snapshot(
            id=new_id(),
            description=spec.description,
            status="locked",
            persist_memorystate=_saves_memory(vm, spec),
        )
        vm.snapshots.append(snap)
        _lock(vm, disks)
        answer = created(snapshot_type(vm, snap))
    engine.tasks.later(engine.timings.snapshot, lambda: _create_job(engine, vm, snap, disks))
    return answer


def _saves_memory(vm: Vm, spec: types.Snapshot) -> bool:
    """CreateSnapshotForVmParameters.saveMemory defaults to true (the API only overrides it
    when `persist_memorystate` is given); memory is saved only from a running VM."""
    wanted = spec.persist_memorystate is not False
    return wanted and vm.status == VmState.UP


def _disks_to_snapshot(inv: Inventory, vm: Vm, spec: types.Snapshot) -> list[Disk]:
    own = vm.own_disk_ids()
    if not spec.disk_attachments:
        return [inv.disks[d] for d in own if d in inv.disks]
    wanted = []
    for attachment in spec.disk_attachments:
        disk_id = attachment.disk.id if attachment.disk else attachment.id
        if disk_id not in own:
            raise bad_request(f"Cannot create Snapshot. Disk {disk_id} is not attached to the VM.")
        wanted.append(inv.disk(disk_id))
    return wanted


def _check_can_snapshot(inv: Inventory, vm: Vm, disks: list[Disk], verb: str) -> None:
    action = f"{verb} Snapshot"
    if any(s.status == "locked" for s in vm.snapshots):
        raise conflict(
            f"Cannot {action}. Snapshot is currently being created or removed for VM {vm.name}."
        )
    if inv.active_backup(vm.id) is not None:
        raise conflict(f"Cannot {action}. The VM is during a backup operation.")
    for disk in disks:
        ensure_unlocked(disk, action)


def _lock(vm: Vm, disks: list[Disk]) -> None:
    for disk in disks:
        disk.status = DiskState.LOCKED
        disk.lock_reason = "snapshot"
    if vm.status == VmState.DOWN:
        vm.status = VmState.IMAGE_LOCKED


def _unlock(inv: Inventory, vm: Vm, disks: list[Disk]) -> None:
    for disk in disks:
        disk.status = DiskState.OK
        disk.lock_reason = ""
    if vm.status == VmState.IMAGE_LOCKED:
        vm.status = VmState.DOWN
    inv.changed.notify_all()


def _create_job(engine: Engine, vm: Vm, snap: Snapshot, disks: list[Disk]) -> None:
    dataplane = engine.dataplane
    inv = engine.inventory
    overlays: dict[str, str] = {}
    for disk in disks:
        dataplane.hold(disk.id)
    try:
        for disk in disks:
            overlay = new_id()
            top = disk.ref()
            dataplane.create_volume(disk.ref(overlay), VolumeFormat.COW, disk.size, parent=top)
            overlays[disk.id] = overlay
        with inv.lock:
            for disk in disks:
                snap.volumes[disk.id] = disk.top
                disk.chain.append(overlays[disk.id])
            snap.status = "ok"
            _unlock(inv, vm, disks)
    except Exception:
        log.exception("snapshot of %s failed", vm.name)
        _undo_overlays(engine, disks, overlays)
        with inv.lock:
            if snap in vm.snapshots:
                vm.snapshots.remove(snap)
            _unlock(inv, vm, disks)
    finally:
        for disk in disks:
            dataplane.release(disk.id)


def _undo_overlays(engine: Engine, disks: list[Disk], overlays: dict[str, str]) -> None:
    for disk in disks:
        if disk.id in overlays:
            try:
                engine.dataplane.remove_volume(disk.ref(overlays[disk.id]))
            except Exception:
                log.exception("removing overlay of %s failed", disk.id)


# remove (merge)
def remove_snapshot(req: Request) -> Response:
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        if req.params["snap"] == vm.active_snapshot_id:
            raise bad_request("Cannot remove Snapshot. The active snapshot cannot be removed.")
        snap = vm.snapshot(req.params["snap"])
        disks = [inv.disks[d] for d in snap.volumes if d in inv.disks]
        _check_can_snapshot(inv, vm, disks, "remove")
        _check_not_attached(inv, vm)
        snap.status = "locked"
        _lock(vm, disks)
    engine.tasks.later(engine.timings.snapshot, lambda: _merge_job(engine, vm, snap, disks))
    return removed()


def _check_not_attached(inv: Inventory, vm: Vm) -> None:
    """RemoveSnapshotCommand.validate: VmValidator.vmNotHavingDeviceSnapshotsAttachedToOtherVms
    (onlyPlugged=false) -> DiskImagesValidator.diskImagesSnapshotsNotAttachedToOtherVms: no
    snapshot of any of the VM's disks (not only the one being removed) may be attached to
    another VM, plugged or not: ACTION_TYPE_FAILED_VM_DISK_SNAPSHOT_IS_ATTACHED_TO_ANOTHER_VM
    (ErrorType.CONFLICT: 409)."""
    own = set(vm.own_disk_ids())
    found = []
    for other in inv.vms.values():
        for attachment in other.attachments:
            if attachment.snapshot_id is None or attachment.disk_id not in own:
                continue
            disk = inv.disks.get(attachment.disk_id)
            snap = next((s for s in vm.snapshots if s.id == attachment.snapshot_id), None)
            alias = disk.name if disk else attachment.disk_id
            description = snap.description if snap else attachment.snapshot_id
            found.append(f"{alias} ,{description}, {other.name}")
    if found:
        disks_info = "\n".join(found)
        raise conflict(
            "Cannot remove Snapshot. The following VM's disks snapshots are attached to other "
            "VMs (Disk Alias/Snapshot Description/VM attached to):\n\n "
            f"{disks_info} \n\nPlease detach them from those VMs and try again."
        )


def _merge_job(engine: Engine, vm: Vm, snap: Snapshot, disks: list[Disk]) -> None:
    inv = engine.inventory
    for disk in disks:
        engine.dataplane.hold(disk.id)
    try:
        for disk in disks:
            _merge_disk(engine, vm, snap, disk)
        with inv.lock:
            if snap in vm.snapshots:
                vm.snapshots.remove(snap)
            _unlock(inv, vm, disks)
    except Exception:
        log.exception("removing snapshot %s of %s failed", snap.id, vm.name)
        with inv.lock:
            snap.status = "ok"
            _unlock(inv, vm, disks)
    finally:
        for disk in disks:
            engine.dataplane.release(disk.id)


def _merge_disk(engine: Engine, vm: Vm, snap: Snapshot, disk: Disk) -> None:
    """Commit the child of the snapshot's volume into it; the volume takes the child's place."""
    with engine.inventory.lock:
        volume = snap.volumes.get(disk.id)
        if volume is None or volume not in disk.chain or volume == disk.top:
            return
        child = disk.chain[disk.chain.index(volume) + 1]
        child_ref, parent_ref = disk.ref(child), disk.ref(volume)
    engine.dataplane.merge_into_parent(child_ref, parent_ref)
    with engine.inventory.lock:
        disk.chain.remove(child)
        for other in vm.snapshots:
            if other.volumes.get(disk.id) == child:
                other.volumes[disk.id] = volume
        snap.volumes.pop(disk.id, None)
