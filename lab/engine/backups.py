"""VM backups (`vms/<id>/backups`) and checkpoints (`vms/<id>/checkpoints`).

A backup holds its disks (guest writes deferred) from start until finalize, so transfers
read the disks as they were when it started. qcow2 disks with incremental backup enabled
get a dirty bitmap named after the new checkpoint (`to_checkpoint_id`), which carries the
backup's description. As the engine (StartVmBackupCommand, StopVmBackupCommand,
DeleteVmCheckpointCommand): a backup id is used once; finalize waits for the backup's
image transfers to finish; any checkpoint can be removed (its child takes its parent).
Both collections came with engine 4.4: the lab presenting 4.3 does not serve them.
"""

from __future__ import annotations

import functools
import logging
import time

from ovirtsdk4 import types

from lab.dataplane import VolumeFormat
from lab.engine.common import created, done, host_ref, limited, listing, ok, removed, vm_ref
from lab.engine.context import Engine
from lab.engine.disks import disk_type
from lab.engine.faults import bad_request, conflict, not_found
from lab.engine.inventory import Backup, Checkpoint, Disk, Inventory, Vm, new_id
from lab.engine.router import Request, Response, Router
from lab.engine.transfers import FINISHED, cancel
from lab.engine.version import BACKUP_API
from lab.engine.xml import href, make, parse, parse_action, timestamp

log = logging.getLogger(__name__)
MAX_DESCRIPTION = 1024


def register(router: Router) -> None:
    """Only an engine of 4.4 or later has these (an older one answers 404 for them)."""
    add = functools.partial(router.add, since=BACKUP_API)
    add("GET", "vms/{vm}/backups", list_backups)
    add("POST", "vms/{vm}/backups", add_backup)
    add("GET", "vms/{vm}/backups/{backup}", get_backup)
    add("POST", "vms/{vm}/backups/{backup}/finalize", finalize_backup)
    add("GET", "vms/{vm}/backups/{backup}/disks", list_backup_disks)
    add("GET", "vms/{vm}/checkpoints", list_checkpoints)
    add("GET", "vms/{vm}/checkpoints/{checkpoint}", get_checkpoint)
    add("DELETE", "vms/{vm}/checkpoints/{checkpoint}", remove_checkpoint)
    add("GET", "vms/{vm}/checkpoints/{checkpoint}/disks", list_checkpoint_disks)


def supports_incremental(disk: Disk) -> bool:
    return disk.incremental and disk.format == VolumeFormat.COW


# views
def backup_type(backup: Backup) -> types.Backup:
    return make(
        types.Backup,
        href("vms", backup.vm_id, "backups", backup.id),
        id=backup.id,
        phase=types.BackupPhase(backup.phase),
        from_checkpoint_id=backup.from_checkpoint_id,
        to_checkpoint_id=backup.to_checkpoint_id,
        description=backup.description,
        creation_date=timestamp(backup.creation_date),
        modification_date=timestamp(backup.modification_date),
        vm=vm_ref(backup.vm_id),
        host=host_ref(backup.host_id),
        disks=[
            make(
                types.Disk,
                href("disks", d),
                id=d,
            )
            for d in backup.disk_ids
        ],
    )


def _backup_disk_type(inv: Inventory, backup: Backup, disk_id: str) -> types.Disk:
    obj = disk_type(inv.disk(disk_id))
    obj.href = href("vms", backup.vm_id, "backups", backup.id, "disks", disk_id)
    incremental = disk_id in backup.incremental_disks
    obj.backup_mode = types.DiskBackupMode.INCREMENTAL if incremental else types.DiskBackupMode.FULL
    return obj


def checkpoint_type(vm: Vm, checkpoint: Checkpoint) -> types.Checkpoint:
    return make(
        types.Checkpoint,
        href("vms", vm.id, "checkpoints", checkpoint.id),
        id=checkpoint.id,
        parent_id=checkpoint.parent_id,
        description=checkpoint.description,
        creation_date=timestamp(checkpoint.creation_date),
        state=types.CheckpointState(checkpoint.state),
        vm=vm_ref(vm.id),
        disks=[
            make(
                types.Disk,
                href("disks", d),
                id=d,
            )
            for d in checkpoint.disk_ids
        ],
    )


def list_backups(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        items = [backup_type(b) for b in inv.backups.values() if b.vm_id == vm.id]
        return listing(limited(req, items), "backups")


def get_backup(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        return ok(backup_type(inv.backup(req.params["vm"], req.params["backup"])))


def list_backup_disks(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        backup = inv.backup(req.params["vm"], req.params["backup"])
        disks = [_backup_disk_type(inv, backup, d) for d in backup.disk_ids if d in inv.disks]
        return listing(disks, "disks")


# add
def add_backup(req: Request) -> Response:
    spec = parse(req.body, types.Backup)
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        backup = _new_backup(inv, vm, spec)
        inv.backups[backup.id] = backup
        answer = created(backup_type(backup))
    engine.tasks.later(engine.timings.backup_step, lambda: _start_job(engine, vm, backup))
    return answer


def _new_backup(inv: Inventory, vm: Vm, spec: types.Backup) -> Backup:
    if inv.active_backup(vm.id) is not None:
        raise conflict("Cannot backup VM. The VM is during a backup operation.")
    if any(s.status == "locked" for s in vm.snapshots):
        raise conflict("Cannot backup VM. Snapshot is currently being created for the VM.")
    disks = _backup_disks(inv, vm, spec)
    from_checkpoint = _from_checkpoint(vm, spec.from_checkpoint_id)
    _check_id_and_description(inv, spec)
    incremental = {
        d.id
        for d in disks
        if from_checkpoint is not None
        and supports_incremental(d)
        and d.id in from_checkpoint.disk_ids
    }
    bitmap_disks = [d for d in disks if supports_incremental(d)]
    hosts = inv.hosts_in_cluster(vm.cluster_id) or list(inv.hosts.values())
    return Backup(
        id=spec.id or new_id(),
        vm_id=vm.id,
        disk_ids=[d.id for d in disks],
        from_checkpoint_id=from_checkpoint.id if from_checkpoint else None,
        to_checkpoint_id=new_id() if bitmap_disks else None,
        host_id=hosts[0].id,
        incremental_disks=incremental,
        description=spec.description,
    )


def _check_id_and_description(inv: Inventory, spec: types.Backup) -> None:
    if spec.description is not None and len(spec.description) > MAX_DESCRIPTION:
        raise bad_request(
            "Cannot backup VM. The VM backup description shouldn't contain more than "
            f"{MAX_DESCRIPTION} characters."
        )
    if spec.id and spec.id in inv.backups:
        raise bad_request(f"Cannot backup VM. The specified VM backup ID {spec.id} already exists.")


def _backup_disks(inv: Inventory, vm: Vm, spec: types.Backup) -> list[Disk]:
    own = vm.own_disk_ids()
    if not spec.disks:
        disks = [inv.disks[d] for d in own if d in inv.disks]
    else:
        disks = []
        for wanted in spec.disks:
            if not wanted.id or wanted.id not in own:
                raise bad_request(f"Cannot backup VM. Disk {wanted.id} is not attached to the VM.")
            disks.append(inv.disk(wanted.id))
    if not disks:
        raise bad_request("Cannot backup VM. The VM has no disks to back up.")
    for disk in disks:
        if disk.status.value != "ok" or disk.transfer_id is not None:
            raise conflict(f"Cannot backup VM. Disk {disk.name} is locked.")
    return disks


def _from_checkpoint(vm: Vm, checkpoint_id: str | None) -> Checkpoint | None:
    if not checkpoint_id:
        return None
    checkpoint = next((c for c in vm.checkpoints if c.id == checkpoint_id), None)
    if checkpoint is None:
        raise bad_request(f"Cannot backup VM. Checkpoint {checkpoint_id} does not exist.")
    if checkpoint.state != "created":
        raise bad_request(f"Cannot backup VM. Checkpoint {checkpoint_id} is invalid.")
    return checkpoint


def _start_job(engine: Engine, vm: Vm, backup: Backup) -> None:
    inv = engine.inventory
    with inv.lock:
        disks = [inv.disks[d] for d in backup.disk_ids if d in inv.disks]
        _set_phase(inv, backup, "starting")
    try:
        for disk in disks:
            engine.dataplane.hold(disk.id)
            backup.held.append(disk.id)
        if backup.to_checkpoint_id:
            for disk in disks:
                if supports_incremental(disk):
                    engine.dataplane.add_bitmap(disk.ref(), backup.to_checkpoint_id)
    except Exception:
        log.exception("starting backup %s failed", backup.id)
        _release(engine, backup)
        with inv.lock:
            _set_phase(inv, backup, "failed")
            backup.finished_at = time.time()
        return
    if not engine.tasks.sleep(engine.timings.backup_step):
        return
    with inv.lock:
        if backup.to_checkpoint_id:
            bitmap_disks = [d.id for d in disks if supports_incremental(d)]
            parent = vm.checkpoints[-1].id if vm.checkpoints else None
            vm.checkpoints.append(
                Checkpoint(
                    backup.to_checkpoint_id,
                    parent,
                    bitmap_disks,
                    description=backup.description,  # StartVmBackupCommand.createVmCheckpoint
                )
            )
        _set_phase(inv, backup, "ready")


def _set_phase(inv: Inventory, backup: Backup, phase: str) -> None:
    backup.phase = phase
    backup.modification_date = time.time()
    inv.changed.notify_all()


def _release(engine: Engine, backup: Backup) -> None:
    while backup.held:
        disk_id = backup.held.pop()
        try:
            engine.dataplane.release(disk_id)
        except Exception:
            log.exception("releasing disk %s failed", disk_id)


# finalize
def finalize_backup(req: Request) -> Response:
    parse_action(req.body)
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        backup = inv.backup(req.params["vm"], req.params["backup"])
        if _has_open_transfers(inv, backup):  # StopVmBackupCommand.validate
            raise conflict("Cannot stop VM backup. There is an active image transfer for VM backup")
        if backup.phase != "ready":
            raise conflict(
                f"Cannot stop VM backup. The VM backup is not in READY phase (phase "
                f"{backup.phase})."
            )
        _set_phase(inv, backup, "finalizing")
    engine.tasks.later(engine.timings.backup_step, lambda: _finalize_job(engine, backup))
    return done()


def _has_open_transfers(inv: Inventory, backup: Backup) -> bool:
    return any(t.backup_id == backup.id and t.phase not in FINISHED for t in inv.transfers.values())


def _finalize_job(engine: Engine, backup: Backup) -> None:
    inv = engine.inventory
    with inv.lock:
        for transfer in inv.transfers.values():
            busy = not transfer.final and not transfer.phase.startswith(("finalizing", "cancelled"))
            if transfer.backup_id == backup.id and busy:
                cancel(engine, transfer, "cancelled_system")
    _release(engine, backup)
    with inv.lock:
        _set_phase(inv, backup, "succeeded")
        backup.finished_at = time.time()


def poll(engine: Engine) -> None:
    """Monitor tick: forget finished backups after `Timings.backup_ttl`."""
    inv = engine.inventory
    now = time.time()
    with inv.lock:
        for backup_id, backup in list(inv.backups.items()):
            if backup.finished_at and now - backup.finished_at > engine.timings.backup_ttl:
                del inv.backups[backup_id]


# checkpoints
def _checkpoint(vm: Vm, checkpoint_id: str) -> Checkpoint:
    checkpoint = next((c for c in vm.checkpoints if c.id == checkpoint_id), None)
    if checkpoint is None:
        raise not_found(checkpoint_id)
    return checkpoint


def list_checkpoints(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        return listing([checkpoint_type(vm, c) for c in vm.checkpoints], "checkpoints")


def get_checkpoint(req: Request) -> Response:
    with req.engine.inventory.lock:
        vm = req.engine.inventory.vm(req.params["vm"])
        return ok(checkpoint_type(vm, _checkpoint(vm, req.params["checkpoint"])))


def list_checkpoint_disks(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        checkpoint = _checkpoint(vm, req.params["checkpoint"])
        disks = [disk_type(inv.disks[d]) for d in checkpoint.disk_ids if d in inv.disks]
        return listing(disks, "disks")


def remove_checkpoint(req: Request) -> Response:
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        vm = inv.vm(req.params["vm"])
        checkpoint = _checkpoint(vm, req.params["checkpoint"])
        if inv.active_backup(vm.id) is not None:
            raise conflict("Cannot remove checkpoint. The VM is during a backup operation.")
        chains = [inv.disks[d].refs() for d in checkpoint.disk_ids if d in inv.disks]
    for chain in chains:
        engine.dataplane.remove_bitmap(chain, checkpoint.id)
    with inv.lock:
        if checkpoint in vm.checkpoints:
            vm.checkpoints.remove(checkpoint)
        for other in vm.checkpoints:
            if other.parent_id == checkpoint.id:
                other.parent_id = checkpoint.parent_id
    return removed()
