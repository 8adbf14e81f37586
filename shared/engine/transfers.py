"""Image transfers: create (download/upload of a disk, a disk snapshot, or a backup's disk),
wait until the hosts serve it, finalize, cancel, list the open ones."""

from __future__ import annotations

import contextlib
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from shared.engine import convert
from shared.engine.errors import EngineOperationFailed, EngineTimeout
from shared.engine.models import TransferInfo
from shared.engine.polling import wait_for

FINISHED = ("finished_success", "finished_failure")
FAILING = ("cancelled_system", "cancelled_user", "finalizing_failure", "finished_failure")
CANCEL_WAIT_S = 60.0


def _transfers(system: Any) -> Any:
    return system.image_transfers_service()


def get(system: Any, transfer_id: str) -> TransferInfo | None:
    """The transfer, or None once the engine has forgotten it."""
    try:
        return convert.transfer_info(_transfers(system).image_transfer_service(transfer_id).get())
    except sdk.NotFoundError:
        return None


def spec(
    *,
    disk_id: str,
    backup_id: str | None,
    snapshot_id: str | None,
    direction: str,
    fmt: str,
    inactivity_timeout_s: int,
    host_id: str | None,
) -> Any:
    """The `types.ImageTransfer` to add; a disk snapshot is named by its volume id alone."""
    transfer = types.ImageTransfer(
        direction=types.ImageTransferDirection(direction),
        format=types.DiskFormat(fmt),
        inactivity_timeout=inactivity_timeout_s,
    )
    if snapshot_id:
        transfer.snapshot = types.DiskSnapshot(id=snapshot_id)
    else:
        transfer.disk = types.Disk(id=disk_id)
    if backup_id:
        transfer.backup = types.Backup(id=backup_id)
    if host_id:
        transfer.host = types.Host(id=host_id)
    return transfer


def add(system: Any, transfer: Any) -> TransferInfo:
    return convert.transfer_info(_transfers(system).add(transfer))


def wait_serving(system: Any, transfer_id: str, timeout_s: float) -> TransferInfo:
    """The transfer once the hosts serve it; after `timeout_s`, EngineTimeout (cancelled)."""
    try:
        return wait_for(
            lambda: _serving(system, transfer_id),
            timeout_s=timeout_s,
            what=f"image transfer {transfer_id} to start",
        )
    except EngineTimeout:
        with contextlib.suppress(sdk.Error):
            cancel(system, transfer_id, wait_s=0)
        raise


def _serving(system: Any, transfer_id: str) -> TransferInfo | None:
    info = get(system, transfer_id)
    if info is None or info.phase in FAILING or info.phase.startswith("paused"):
        if info is not None and info.phase.startswith("paused"):
            cancel(system, transfer_id, wait_s=0)
        phase = info.phase if info else "gone"
        raise EngineOperationFailed(
            f"image transfer {transfer_id} failed to start (phase {phase})",
            hint="check that the host's ovirt-imageio is running; see the engine's events",
        )
    if info.phase == "transferring" and (info.transfer_url or info.proxy_url):
        return info
    return None


def finalize(system: Any, transfer_id: str, timeout_s: float) -> None:
    """Finalize and wait for FINISHED_SUCCESS; gone (404) counts as done unless the disk
    it wrote to is now ILLEGAL."""
    info = get(system, transfer_id)
    if info is None:
        return
    if info.phase in ("transferring",) or info.phase.startswith("paused"):
        with contextlib.suppress(sdk.NotFoundError):
            _transfers(system).image_transfer_service(transfer_id).finalize()
    done = wait_for(
        lambda: _final_phase(system, transfer_id),
        timeout_s=timeout_s,
        what=f"image transfer {transfer_id} to finish",
    )
    if done == "gone" and info.disk_id and _disk_illegal(system, info.disk_id):
        done = "finished_failure"
    if done != "finished_success" and done != "gone":
        raise EngineOperationFailed(
            f"image transfer {transfer_id} ended in {done}",
            hint="the data may be incomplete; retry the transfer",
        )


def _final_phase(system: Any, transfer_id: str) -> str | None:
    info = get(system, transfer_id)
    if info is None:
        return "gone"
    return info.phase if info.phase in FINISHED else None


def _disk_illegal(system: Any, disk_id: str) -> bool:
    try:
        disk = system.disks_service().disk_service(disk_id).get()
    except sdk.NotFoundError:
        return False
    return convert.enum_value(disk.status) == "illegal"


def cancel(system: Any, transfer_id: str, wait_s: float = CANCEL_WAIT_S) -> None:
    """Cancel (ignoring transfers already ending or gone); wait up to `wait_s` for the end."""
    try:
        _transfers(system).image_transfer_service(transfer_id).cancel()
    except sdk.NotFoundError:
        return
    except sdk.Error as e:
        if e.code != 409:  # already finalizing / finished
            raise
    if wait_s > 0:
        wait_for(
            lambda: _final_phase(system, transfer_id),
            timeout_s=wait_s,
            what=f"image transfer {transfer_id} to end",
        )


def open_transfers(system: Any, disk_ids: list[str]) -> list[TransferInfo]:
    """Transfers not finished yet, on any of `disk_ids`."""
    wanted = set(disk_ids)
    infos = [convert.transfer_info(t) for t in _transfers(system).list()]
    return [t for t in infos if t.phase not in FINISHED and t.disk_id in wanted]
