"""Image transfers (`imagetransfers`): download/upload of a disk, a disk snapshot, or a
disk of a running backup, through imageio tickets on a host and on the engine's proxy.

Phases: INITIALIZING -> TRANSFERRING -> (finalize) FINALIZING_SUCCESS -> FINISHED_SUCCESS,
or (cancel / inactivity) CANCELLED_* -> FINALIZING_FAILURE -> FINISHED_FAILURE. Finished
transfers stay listed for `Timings.finished_ttl`, then disappear (404), like the engine.

As TransferDiskImageCommand: a disk plugged into a VM that is not Down is transferred only
through a backup or a disk snapshot; a backup's transfer is never qcow2; an idle transfer
follows its `timeout_policy` (legacy: downloads are cancelled, uploads paused; pause;
cancel); a failed or cancelled upload leaves its disk ILLEGAL and the disk is removed.

An engine presenting a version before 4.4 (lab.engine.version) is a 4.3 engine: there are
no backups, so a transfer naming one is refused (400); ovirt-imageio served the volume's
file, so every transfer moves the volume file as it is, whatever `format` and `shallow`
the request asked (a qcow2 volume's transfer is a "cow" one: its qcow2 bytes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ovirtsdk4 import types

from lab.dataplane import VolumeFormat, VolumeRef
from lab.engine.common import created, disk_ref, done, host_ref, limited, listing, ok
from lab.engine.context import Engine
from lab.engine.disks import ensure_unlocked, forget_disk
from lab.engine.faults import bad_request, conflict, incomplete
from lab.engine.inventory import Backup, Disk, DiskState, Inventory, Transfer, VmState, new_id
from lab.engine.router import Request, Response, Router
from lab.engine.version import EngineVersion
from lab.engine.xml import href, make, parse, parse_action

log = logging.getLogger(__name__)
FINISHED = ("finished_success", "finished_failure")  # ImageTransferPhase.isFinished()


def register(router: Router) -> None:
    router.add("GET", "imagetransfers", list_transfers)
    router.add("POST", "imagetransfers", add_transfer)
    router.add("GET", "imagetransfers/{transfer}", get_transfer)
    router.add("POST", "imagetransfers/{transfer}/finalize", finalize_transfer)
    router.add("POST", "imagetransfers/{transfer}/cancel", cancel_transfer)
    router.add("POST", "imagetransfers/{transfer}/extend", extend_transfer)


def transfer_type(transfer: Transfer) -> types.ImageTransfer:
    obj = make(
        types.ImageTransfer,
        href("imagetransfers", transfer.id),
        id=transfer.id,
        phase=types.ImageTransferPhase(transfer.phase),
        direction=types.ImageTransferDirection(transfer.direction),
        format=types.DiskFormat(transfer.format.value),
        inactivity_timeout=transfer.inactivity_timeout,
        active=transfer.phase == "transferring",
        shallow=not transfer.backing_chain,
        timeout_policy=types.ImageTransferTimeoutPolicy(transfer.timeout_policy),
        transferred=transfer.transferred,
        disk=disk_ref(transfer.disk_id),
        image=make(
            types.Image,
            href("images", transfer.volume_id),
            id=transfer.volume_id,
        ),
        host=host_ref(transfer.host_id),
        transfer_url=transfer.transfer_url,
        proxy_url=transfer.proxy_url,
    )
    if transfer.backup_id:
        obj.backup = types.Backup(id=transfer.backup_id)
    if transfer.snapshot_volume:
        obj.snapshot = types.DiskSnapshot(id=transfer.snapshot_volume)
    return obj


def list_transfers(req: Request) -> Response:
    inv = req.engine.inventory
    with inv.lock:
        items = [transfer_type(t) for t in inv.transfers.values()]
        return listing(limited(req, items), "image_transfers")


def get_transfer(req: Request) -> Response:
    with req.engine.inventory.lock:
        return ok(transfer_type(req.engine.inventory.transfer(req.params["transfer"])))


# add
def add_transfer(req: Request) -> Response:
    spec = parse(req.body, types.ImageTransfer)
    engine = req.engine
    inv = engine.inventory
    with inv.lock:
        transfer = _new_transfer(inv, spec, engine.timings.inactivity_timeout, engine.version)
        disk = inv.disk(transfer.disk_id)
        disk.transfer_id = transfer.id
        if transfer.backup_id is None:
            disk.status = DiskState.LOCKED
            disk.lock_reason = "transfer"
        inv.transfers[transfer.id] = transfer
        answer = created(transfer_type(transfer))
    engine.tasks.later(engine.timings.transfer_init, lambda: _start_job(engine, transfer))
    return answer


def _new_transfer(
    inv: Inventory, spec: types.ImageTransfer, default_timeout: int, version: EngineVersion
) -> Transfer:
    direction = spec.direction.value if spec.direction else "upload"
    if not version.backup_api and spec.backup is not None:
        raise bad_request(
            "Cannot transfer Virtual Disk. VM backups are not supported by engine version "
            f"{version.short}."
        )
    backup = _backup_of(inv, spec)
    disk, volume = _target(inv, spec, backup)
    if backup is None:
        if volume == disk.top:  # not a disk snapshot
            _ensure_not_plugged(inv, disk)
        ensure_unlocked(disk, "transfer image")
    elif disk.transfer_id is not None:
        raise conflict(f"Cannot transfer image. Disk {disk.name} is being transferred.")
    if backup is not None and spec.format == types.DiskFormat.COW:
        raise bad_request(
            "Cannot transfer Virtual Disk. The specified format is not applicable for VM backup."
        )
    fmt = VolumeFormat(spec.format.value) if spec.format else disk.volume_format(volume)
    if backup is not None and direction == "download":
        fmt = VolumeFormat.RAW
    if direction == "upload" and (backup is not None or volume != disk.top):
        raise bad_request("Cannot transfer image. Uploads are only possible to a disk.")
    backing_chain = fmt == VolumeFormat.RAW and not spec.shallow
    if not version.backup_api:  # 4.3: imageio serves the volume's file as it is
        fmt, backing_chain = disk.volume_format(volume), False
    return Transfer(
        id=new_id(),
        disk_id=disk.id,
        direction=direction,
        format=fmt,
        volume_id=volume,
        backing_chain=backing_chain,
        inactivity_timeout=(
            default_timeout if spec.inactivity_timeout is None else spec.inactivity_timeout
        ),
        host_id=_host(inv, spec, disk),
        timeout_policy=spec.timeout_policy.value if spec.timeout_policy else "legacy",
        snapshot_volume=volume if spec.snapshot is not None else None,
        backup_id=backup.id if backup else None,
        dirty_bitmap=_dirty_bitmap(backup, disk),
    )


def _ensure_not_plugged(inv: Inventory, disk: Disk) -> None:
    """DiskValidator.isDiskPluggedToAnyNonDownVm: no VM other than Down has it plugged."""
    names = sorted(
        vm.name
        for vm in inv.vms.values()
        if vm.status != VmState.DOWN
        and any(a.disk_id == disk.id and a.active for a in vm.attachments)
    )
    if names:
        raise conflict(
            f"Cannot transfer Virtual Disk. The disk {disk.name} is plugged to non-Down VMs: "
            + ",".join(names)
        )


def _backup_of(inv: Inventory, spec: types.ImageTransfer) -> Backup | None:
    if spec.backup is None or not spec.backup.id:
        return None
    backup = inv.backups.get(spec.backup.id)
    if backup is None:
        raise bad_request(f"Cannot transfer image. Backup {spec.backup.id} does not exist.")
    if backup.phase != "ready":
        raise conflict(f"Cannot transfer image. The backup is not ready (phase {backup.phase}).")
    return backup


def _target(inv: Inventory, spec: types.ImageTransfer, backup: Backup | None) -> tuple[Disk, str]:
    """The disk and the volume the transfer is about."""
    if spec.snapshot is not None and spec.snapshot.id:
        disk, _, _ = inv.owner_of_volume(spec.snapshot.id)
        return disk, spec.snapshot.id
    disk_id = spec.disk.id if spec.disk else None
    if disk_id is None and spec.image is not None and spec.image.id:
        disk, _, _ = inv.owner_of_volume(spec.image.id)
        disk_id = disk.id
    if disk_id is None:
        raise incomplete("ImageTransfer", "disk.id|image.id|snapshot.id")
    disk = inv.disk(disk_id)
    if backup is not None and disk.id not in backup.disk_ids:
        raise bad_request(f"Cannot transfer image. Disk {disk.id} is not part of the backup.")
    return disk, disk.top


def _host(inv: Inventory, spec: types.ImageTransfer, disk: Disk) -> str:
    if spec.host is not None and spec.host.id:
        return inv.host(spec.host.id).id
    if spec.host is not None and spec.host.name:
        for host in inv.hosts.values():
            if host.name == spec.host.name:
                return host.id
    return inv.host_for_disk(disk.id).id


def _dirty_bitmap(backup: Backup | None, disk: Disk) -> str | None:
    if backup is None or disk.id not in backup.incremental_disks:
        return None
    return backup.from_checkpoint_id


# start: export + tickets
def _start_job(engine: Engine, transfer: Transfer) -> None:
    inv = engine.inventory
    with inv.lock:
        cancelled = transfer.phase != "initializing"
    if cancelled:
        _end(engine, transfer, "finalizing_failure", "finished_failure")
        return
    with inv.lock:
        disk = inv.disk(transfer.disk_id)
        ref = disk.ref(transfer.volume_id)
        host = inv.host(transfer.host_id).name
        size = disk.size
    try:
        _setup(engine, transfer, ref, host, size)
    except Exception:
        log.exception("starting transfer %s failed", transfer.id)
        _end(engine, transfer, "finalizing_failure", "finished_failure")
        return
    with inv.lock:
        if transfer.phase == "initializing":
            transfer.phase = "transferring"
            inv.changed.notify_all()
            return
    _end(engine, transfer, "finalizing_failure", "finished_failure")  # cancelled meanwhile


def _setup(engine: Engine, transfer: Transfer, ref: VolumeRef, host: str, size: int) -> None:
    dataplane = engine.dataplane
    if transfer.direction == "download" and transfer.backup_id is None:
        dataplane.hold(transfer.disk_id)
        transfer.held = True
    export = dataplane.export(
        ref,
        backing_chain=transfer.backing_chain,
        writable=transfer.direction == "upload",
        dirty_bitmap=transfer.dirty_bitmap,
        fmt=transfer.format,
    )
    transfer.export = export
    if transfer.format == VolumeFormat.COW:
        size = int(getattr(export, "size", 0) or size)
    transfer.size = size
    ops = ["read"] if transfer.direction == "download" else ["read", "write"]
    timeout = engine.timings.ticket_timeout
    transfer.transfer_url = dataplane.add_ticket(
        host, transfer.id, export.nbd_url, size, ops, timeout, dirty=bool(transfer.dirty_bitmap)
    )
    transfer.host_ticket = True
    transfer.proxy_url = dataplane.add_proxy_ticket(
        transfer.id, transfer.transfer_url, size, ops, timeout
    )
    transfer.proxy_ticket = True


# finalize / cancel / timeout
def finalize_transfer(req: Request) -> Response:
    parse_action(req.body)
    engine = req.engine
    with engine.inventory.lock:
        transfer = engine.inventory.transfer(req.params["transfer"])
        if transfer.phase not in ("transferring", "paused_user", "paused_system"):
            raise conflict(
                f"Cannot finalize image transfer. The transfer is in phase {transfer.phase}."
            )
        transfer.phase = "finalizing_success"
    engine.tasks.later(
        engine.timings.transfer_final,
        lambda: _end(engine, transfer, "finalizing_success", "finished_success"),
    )
    return done()


def cancel_transfer(req: Request) -> Response:
    parse_action(req.body)
    with req.engine.inventory.lock:
        transfer = req.engine.inventory.transfer(req.params["transfer"])
        if transfer.final or transfer.phase.startswith("finalizing"):
            raise conflict(
                f"Cannot cancel image transfer. The transfer is in phase {transfer.phase}."
            )
        cancel(req.engine, transfer, "cancelled_user")
    return done()


def extend_transfer(req: Request) -> Response:
    parse_action(req.body)
    with req.engine.inventory.lock:
        req.engine.inventory.transfer(req.params["transfer"])
    return done()


def cancel(engine: Engine, transfer: Transfer, phase: str) -> None:
    """Cancel (caller holds the lock); the initializing job cleans up if still running."""
    was = transfer.phase
    transfer.phase = phase
    if was == "initializing":
        return
    engine.tasks.later(
        engine.timings.transfer_final,
        lambda: _end(engine, transfer, "finalizing_failure", "finished_failure"),
    )


def _end(engine: Engine, transfer: Transfer, finalizing: str, finished: str) -> None:
    inv = engine.inventory
    with inv.lock:
        transfer.phase = finalizing
    _cleanup(engine, transfer)
    failed_upload = transfer.direction == "upload" and finished == "finished_failure"
    with inv.lock:
        disk = inv.disks.get(transfer.disk_id)
        if disk is not None and disk.transfer_id == transfer.id:
            disk.transfer_id = None
            if disk.lock_reason == "transfer":
                disk.status = DiskState.ILLEGAL if failed_upload else DiskState.OK
                disk.lock_reason = ""
        inv.changed.notify_all()
    if failed_upload:
        _remove_failed_upload(engine, transfer.disk_id)
    with inv.lock:
        transfer.phase = finished
        transfer.finished_at = time.time()
        inv.changed.notify_all()


def _remove_failed_upload(engine: Engine, disk_id: str) -> None:
    """TransferDiskImageCommand.endWithFailure: an upload that failed or was cancelled
    left its disk ILLEGAL; the engine removes the disk (RemoveDisk)."""
    engine.tasks.sleep(engine.timings.disk_op)
    with engine.inventory.lock:
        disk = engine.inventory.disks.get(disk_id)
        if disk is not None and disk.status == DiskState.ILLEGAL:
            log.info("removing disk %s of a failed upload", disk_id)
            forget_disk(engine, disk)


def _cleanup(engine: Engine, transfer: Transfer) -> None:
    """Remove tickets, stop the export, release the hold; never raises."""
    dataplane = engine.dataplane
    with engine.inventory.lock:
        host = engine.inventory.hosts[transfer.host_id].name
    steps: list[Callable[[], None]] = []
    if transfer.proxy_ticket:
        steps.append(lambda: dataplane.remove_proxy_ticket(transfer.id))
    if transfer.host_ticket:
        steps.append(lambda: dataplane.remove_ticket(host, transfer.id))
    if transfer.export is not None:
        steps.append(transfer.export.close)
    if transfer.held:
        steps.append(lambda: dataplane.release(transfer.disk_id))
    for step in steps:
        try:
            step()
        except Exception:
            log.exception("cleaning up transfer %s failed", transfer.id)
    transfer.proxy_ticket = transfer.host_ticket = transfer.held = False
    transfer.export = None


def poll(engine: Engine) -> None:
    """Monitor tick: progress, inactivity timeouts, and forgetting old finished transfers."""
    inv = engine.inventory
    now = time.time()
    with inv.lock:
        active = [t for t in inv.transfers.values() if t.phase == "transferring"]
        expired = [
            t.id
            for t in inv.transfers.values()
            if t.finished_at is not None and now - t.finished_at > engine.timings.finished_ttl
        ]
        for transfer_id in expired:
            del inv.transfers[transfer_id]
        hosts = {t.id: inv.hosts[t.host_id].name for t in active}
    for transfer in active:
        _check_activity(engine, transfer, hosts[transfer.id])


def _check_activity(engine: Engine, transfer: Transfer, host: str) -> None:
    try:
        status = engine.dataplane.ticket_status(host, transfer.id)
    except Exception:
        return
    idle = float(status.get("idle_time", 0) or 0)  # type: ignore[arg-type]
    with engine.inventory.lock:
        transfer.transferred = int(status.get("transferred", 0) or 0)  # type: ignore[call-overload]
        if transfer.phase != "transferring":
            return
        timeout = transfer.inactivity_timeout
        if timeout > 0 and idle > timeout and not status.get("active"):
            _on_inactivity(engine, transfer, idle)


def _on_inactivity(engine: Engine, transfer: Transfer, idle: float) -> None:
    """TransferDiskImageCommand.stopTransferIfNecessary (caller holds the lock)."""
    policy = transfer.timeout_policy
    if policy == "pause" or (policy == "legacy" and transfer.direction == "upload"):
        log.info("transfer %s idle for %.0fs: pausing", transfer.id, idle)
        transfer.phase = "paused_system"
        engine.inventory.changed.notify_all()
        return
    log.info("transfer %s idle for %.0fs: cancelling", transfer.id, idle)
    cancel(engine, transfer, "cancelled_system")
