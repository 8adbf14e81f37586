"""Disks attached to the lab's proxy VMs, driven with the real ovirtsdk4 against `drover lab up`:
the proxy VMs of each cluster and their node files, a restore's writable attachment whose
writes land in the disk, and a backup's disk snapshot attachment that holds the snapshot."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from lab.leftovers import count_leftovers
from tests.integration.engine_client import (
    connect,
    download,
    find_disk,
    find_vm,
    image_transfer,
    lab_write,
    sha256,
    snapshot,
    vm_disks,
    wait_disk_ok,
    wait_for,
)

MiB = 1 << 20
DISK_SIZE = 16 * MiB
PROXY_TAG = "drover-proxy"
# where the proxy writes, and what: (offset, length); the rest of the disk stays zero
WRITES = ((0, MiB), (5 * MiB + 4096, 64 * 1024), (DISK_SIZE - MiB, MiB))

pytestmark = pytest.mark.integration


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[sdk.Connection]:
    with connect(lab) as conn:
        yield conn


def device_path(lab: dict[str, Any], proxy: str, disk_id: str) -> Path:
    """The disk as the proxy (VirtIO-SCSI) sees it."""
    by_id = Path(lab["proxies_root"]) / proxy / "dev/disk/by-id"
    return by_id / f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}"


def proxy_attachments(connection: sdk.Connection, proxy: str) -> Any:
    vm = find_vm(connection, f"name={proxy}")
    return connection.system_service().vms_service().vm_service(vm.id).disk_attachments_service()


def foreign_attachments(connection: sdk.Connection) -> int:
    return count_leftovers(connection)["disk_attachments"]


@contextlib.contextmanager
def attached(
    lab: dict[str, Any],
    connection: sdk.Connection,
    proxy: str,
    disk_id: str,
    snapshot_id: str | None = None,
) -> Iterator[Path]:
    """The disk (as of `snapshot_id`: read-only) plugged into the proxy, as Drover attaches
    it; yields its device. Detached at the end whatever happened: the lab is the session's."""
    attachments = proxy_attachments(connection, proxy)
    attachments.add(
        types.DiskAttachment(
            disk=types.Disk(
                id=disk_id, snapshot=types.Snapshot(id=snapshot_id) if snapshot_id else None
            ),
            interface=types.DiskInterface.VIRTIO_SCSI,
            bootable=False,
            active=True,
            read_only=bool(snapshot_id),
        )
    )
    device = device_path(lab, proxy, disk_id)
    try:
        wait_for(device.exists, f"{device} to appear")
        yield device
    finally:
        with contextlib.suppress(sdk.NotFoundError):
            attachments.attachment_service(disk_id).remove(detach_only=True)
        wait_for(lambda: not device.exists(), f"{device} to disappear")


# the proxy VMs
def test_every_cluster_has_a_second_fit_proxy_with_its_node_files(
    lab: dict[str, Any], connection: sdk.Connection
) -> None:
    entries = {p["vm"]: p for p in lab["proxies"]}
    assert {name: (p["cluster"], p["virtio_scsi"]) for name, p in entries.items()} == {
        "drover-proxy-cluster1": ("cluster1", True),
        "drover-proxy-cluster1-b": ("cluster1", True),
        "drover-proxy-cluster2": ("cluster2", False),
        "drover-proxy-cluster2-b": ("cluster2", True),
    }
    system = connection.system_service()
    vms = {vm.name: vm for vm in system.vms_service().list(search=f"tag={PROXY_TAG}")}
    assert set(vms) == set(entries)
    for name, entry in entries.items():
        vm = vms[name]
        assert vm.id == entry["vm_id"] and vm.status == types.VmStatus.UP
        assert vm.virtio_scsi.enabled is entry["virtio_scsi"]
        root = Path(entry["root"])
        assert (root / "sys/class/dmi/id/product_uuid").read_text() == vm.id.upper() + "\n"
        assert "virtio-drover-node-os" in (root / "etc/lvm/lvm.conf").read_text()
        [os_disk] = vm_disks(connection, vm)
        domain = system.storage_domains_service().storage_domain_service(
            os_disk.storage_domains[0].id
        )
        assert domain.get().name == "nfs-data"
    assert foreign_attachments(connection) == 0  # a proxy's own OS disk is no leftover


# a restore: a new disk attached writable, written through the device, detached
@contextlib.contextmanager
def new_disk(
    connection: sdk.Connection, domain: str, fmt: types.DiskFormat
) -> Iterator[types.Disk]:
    disks = connection.system_service().disks_service()
    disk = disks.add(
        types.Disk(
            name=f"proxy-attach-{fmt.value}-{domain}",
            format=fmt,
            sparse=fmt == types.DiskFormat.COW,
            provisioned_size=DISK_SIZE,
            storage_domains=[types.StorageDomain(name=domain)],
        )
    )
    try:
        yield wait_disk_ok(connection, disk.id)
    finally:
        service = disks.disk_service(disk.id)
        with contextlib.suppress(sdk.NotFoundError):
            service.remove()
        wait_for(lambda: _gone(service), f"disk {disk.id} removed")


def _gone(service: Any) -> bool:
    try:
        service.get()
    except sdk.NotFoundError:
        return True
    return False


def expected_data(seed: int) -> tuple[bytearray, list[tuple[int, bytes]]]:
    rng = random.Random(seed)
    writes = [(offset, rng.randbytes(length)) for offset, length in WRITES]
    image = bytearray(DISK_SIZE)
    for offset, data in writes:
        image[offset : offset + len(data)] = data
    return image, writes


def write_device(device: Path, writes: list[tuple[int, bytes]]) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        for offset, data in writes:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_disk(lab: dict[str, Any], connection: sdk.Connection, disk_id: str, out: Path) -> bytes:
    """The disk's guest data through the API: it is attached to no VM, so a plain download."""
    spec = types.ImageTransfer(
        disk=types.Disk(id=disk_id),
        format=types.DiskFormat.RAW,
        direction=types.ImageTransferDirection.DOWNLOAD,
    )
    with image_transfer(connection, spec) as transfer:
        download(lab, transfer, out)
    return out.read_bytes()


@pytest.mark.parametrize(
    ("domain", "fmt"),
    [
        ("nfs-data", types.DiskFormat.COW),
        ("iscsi-data", types.DiskFormat.COW),
        ("gluster-data", types.DiskFormat.RAW),
    ],
)
def test_what_a_proxy_writes_into_a_writable_attachment_lands_in_the_disk(
    lab: dict[str, Any],
    connection: sdk.Connection,
    tmp_path: Path,
    domain: str,
    fmt: types.DiskFormat,
) -> None:
    proxy = "drover-proxy-cluster1-b"
    expected, writes = expected_data(seed=len(domain) * 7 + len(fmt.value))
    with new_disk(connection, domain, fmt) as disk:
        with attached(lab, connection, proxy, disk.id) as device:
            assert foreign_attachments(connection) == 1  # a restore's disk left on a proxy
            write_device(device, writes)
            # unplugged and plugged again (PUT active): the new device shows what was written
            service = proxy_attachments(connection, proxy).attachment_service(disk.id)
            service.update(types.DiskAttachment(active=False))
            wait_for(lambda: not device.exists(), f"{device} to be unplugged")
            service.update(types.DiskAttachment(active=True))
            wait_for(device.exists, f"{device} to be plugged again")
            assert device.read_bytes() == expected
        assert foreign_attachments(connection) == 0
        disk_now = connection.system_service().disks_service().disk_service(disk.id).get()
        assert disk_now.format == fmt and disk_now.status == types.DiskStatus.OK
        assert read_disk(lab, connection, disk.id, tmp_path / "disk.raw") == expected


# a backup: a disk snapshot attached read-only holds its snapshot
def test_a_snapshot_is_not_removed_while_a_disk_snapshot_of_its_vm_is_attached(
    lab: dict[str, Any], connection: sdk.Connection
) -> None:
    vm, disk = find_disk(connection, types.DiskFormat.COW, types.StorageType.NFS)
    proxy = "drover-proxy-cluster1"
    snapshots = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    index = [d.id for d in vm_disks(connection, vm)].index(disk.id)
    with snapshot(connection, vm) as snap:
        with attached(lab, connection, proxy, disk.id, snap.id) as device:
            assert foreign_attachments(connection) == 1
            before = sha256(device)
            lab_write(lab, vm.name, index, 0, MiB)  # the guest goes on writing: not in the view
            assert sha256(device) == before
            with pytest.raises(sdk.Error) as refused:
                snapshots.snapshot_service(snap.id).remove()
            assert refused.value.code == 409
            assert "attached to other VMs" in str(refused.value) and proxy in str(refused.value)
        assert foreign_attachments(connection) == 0
    # the snapshot context removed the snapshot once the attachment was gone
    assert all(s.id != snap.id for s in snapshots.list())


def test_the_active_snapshot_cannot_be_attached(connection: sdk.Connection) -> None:
    vm, disk = find_disk(connection, types.DiskFormat.COW, types.StorageType.NFS)
    active = next(
        s
        for s in connection.system_service()
        .vms_service()
        .vm_service(vm.id)
        .snapshots_service()
        .list()
        if s.snapshot_type == types.SnapshotType.ACTIVE
    )
    with pytest.raises(sdk.Error, match="only allowed for regular snapshots") as refused:
        proxy_attachments(connection, "drover-proxy-cluster1").add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id, snapshot=types.Snapshot(id=active.id)),
                interface=types.DiskInterface.VIRTIO_SCSI,
                active=True,
                read_only=True,
            )
        )
    assert refused.value.code == 409
