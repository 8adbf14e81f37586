"""Small helpers for driving the lab with the real oVirt SDK and imageio client."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from ovirt_imageio import client as imageio

T = TypeVar("T")
WAIT_S = 60.0


def connect(lab: dict[str, Any], password: str | None = None) -> sdk.Connection:
    engine = lab["engine"]
    return sdk.Connection(
        url=engine["url"],
        username=engine["username"],
        password=engine["password"] if password is None else password,
        ca_file=engine["ca_file"],
    )


def wait_for(condition: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def find_vm(connection: sdk.Connection, search: str) -> types.Vm:
    vms = connection.system_service().vms_service().list(search=search)
    assert vms, f"no VM matches {search!r}"
    return vms[0]


def vm_disks(connection: sdk.Connection, vm: types.Vm) -> list[types.Disk]:
    system = connection.system_service()
    attachments = system.vms_service().vm_service(vm.id).disk_attachments_service().list()
    return [system.disks_service().disk_service(a.disk.id).get() for a in attachments]


def domain_of(connection: sdk.Connection, disk: types.Disk) -> types.StorageDomain:
    sd_id = disk.storage_domains[0].id
    return connection.system_service().storage_domains_service().storage_domain_service(sd_id).get()


def find_disk(
    connection: sdk.Connection, fmt: types.DiskFormat, storage: types.StorageType
) -> tuple[types.Vm, types.Disk]:
    for vm in connection.system_service().vms_service().list():
        if "proxy" in vm.name:
            continue
        for disk in vm_disks(connection, vm):
            if disk.format == fmt and domain_of(connection, disk).storage.type == storage:
                return vm, disk
    raise AssertionError(f"the lab has no {fmt} disk on {storage}")


def wait_disk_ok(connection: sdk.Connection, disk_id: str) -> types.Disk:
    service = connection.system_service().disks_service().disk_service(disk_id)
    return wait_for(
        lambda: (d := service.get()).status == types.DiskStatus.OK and d, f"disk {disk_id} OK"
    )


@contextmanager
def snapshot(connection: sdk.Connection, vm: types.Vm) -> Iterator[types.Snapshot]:
    snapshots = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    snap = snapshots.add(types.Snapshot(description="test", persist_memorystate=False))
    service = snapshots.snapshot_service(snap.id)
    wait_for(lambda: service.get().snapshot_status == types.SnapshotStatus.OK, "snapshot OK")
    try:
        yield service.get()
    finally:
        wait_for(lambda: _try_remove(service), "snapshot removal accepted")
        wait_for(lambda: all(s.id != snap.id for s in snapshots.list()), "snapshot gone")


def _try_remove(service: Any) -> bool:
    try:
        service.remove()
        return True
    except sdk.Error as e:
        if e.code == 409:
            return False
        raise


@contextmanager
def image_transfer(
    connection: sdk.Connection, transfer: types.ImageTransfer
) -> Iterator[types.ImageTransfer]:
    transfers = connection.system_service().image_transfers_service()
    created = transfers.add(transfer)
    service = transfers.image_transfer_service(created.id)
    ready = wait_for(
        lambda: (t := service.get()).phase == types.ImageTransferPhase.TRANSFERRING and t,
        "transfer TRANSFERRING",
    )
    try:
        yield ready
    finally:
        service.finalize()
        wait_for(lambda: _finished(service), "transfer finished")


def _finished(service: Any) -> bool:
    try:
        return service.get().phase in (
            types.ImageTransferPhase.FINISHED_SUCCESS,
            types.ImageTransferPhase.FINISHED_FAILURE,
        )
    except sdk.NotFoundError:
        return True


@contextmanager
def vm_backup(
    connection: sdk.Connection,
    vm: types.Vm,
    disks: list[types.Disk],
    from_checkpoint: str | None = None,
) -> Iterator[types.Backup]:
    backups = connection.system_service().vms_service().vm_service(vm.id).backups_service()
    backup = backups.add(
        types.Backup(disks=[types.Disk(id=d.id) for d in disks], from_checkpoint_id=from_checkpoint)
    )
    service = backups.backup_service(backup.id)
    ready = wait_for(
        lambda: (b := service.get()).phase == types.BackupPhase.READY and b, "backup READY"
    )
    try:
        yield ready
    finally:
        service.finalize()
        wait_for(lambda: service.get().phase == types.BackupPhase.SUCCEEDED, "backup SUCCEEDED")


def download(lab: dict[str, Any], transfer: types.ImageTransfer, path: Path, **kwargs: Any) -> Path:
    imageio.download(
        transfer.transfer_url, str(path), lab["engine"]["ca_file"], fmt="raw", **kwargs
    )
    return path


def lab_write(lab: dict[str, Any], vm: str, disk: int, offset: int, length: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "lab",
            "write",
            "--state-dir",
            lab["state_dir"],
            "--vm",
            vm,
            "--disk",
            str(disk),
            "--offset",
            str(offset),
            "--length",
            str(length),
        ],
        check=True,
        capture_output=True,
    )


def sha256(path: Path, length: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        remaining = length if length is not None else -1
        while chunk := f.read(1 << 20 if remaining < 0 else min(1 << 20, remaining)):
            digest.update(chunk)
            remaining -= len(chunk) if remaining >= 0 else 0
    return digest.hexdigest()
