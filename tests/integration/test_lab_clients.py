"""The real oVirt clients (ovirtsdk4, ovirt_imageio.client, OpenSSH) against `drover lab up`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import paramiko
import pytest
from ovirt_imageio import client as imageio

from tests.integration.engine_client import (
    connect,
    domain_of,
    download,
    find_disk,
    find_vm,
    image_transfer,
    lab_write,
    sha256,
    snapshot,
    vm_backup,
    vm_disks,
    wait_disk_ok,
    wait_for,
)

MiB = 1 << 20
GRANULARITY = 64 * 1024  # qemu's default dirty-bitmap granularity for these volumes

pytestmark = pytest.mark.integration


@pytest.fixture
def connection(lab: dict[str, Any]) -> Any:
    with connect(lab) as conn:
        yield conn


def volume_path(
    lab: dict[str, Any], domain: types.StorageDomain, disk_id: str, volume_id: str
) -> Path:
    """Where a host sees a file-domain volume (<mount_root>/<server:_path>/<sd>/images/...)."""
    mount_root = Path(lab["hosts"][0]["mount_root"])
    hits = list(mount_root.glob(f"**/{domain.id}/images/{disk_id}/{volume_id}"))
    assert hits, f"volume {volume_id} not under {mount_root}"
    return hits[0]


def guest_view(path: Path, out: Path) -> Path:
    """The disk as its guest sees it: the whole chain, converted to raw by qemu-img."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(out)], check=True)
    return out


def test_login_and_inventory(connection: Any) -> None:
    assert connection.test(raise_exception=True)
    system = connection.system_service()
    api = system.get()
    assert api.product_info.version.major == 4
    assert len(system.data_centers_service().list()) >= 1
    assert len(system.clusters_service().list()) == 2
    hosts = system.hosts_service().list()
    assert len(hosts) >= 2 and all(h.status == types.HostStatus.UP for h in hosts)
    kinds = {sd.storage.type for sd in system.storage_domains_service().list()}
    assert {types.StorageType.NFS, types.StorageType.GLUSTERFS, types.StorageType.ISCSI} <= kinds
    vms = system.vms_service().list()
    guests = [vm for vm in vms if "proxy" not in vm.name]
    assert len(guests) >= 4
    formats = {d.format for vm in guests for d in vm_disks(connection, vm)}
    assert formats == {types.DiskFormat.RAW, types.DiskFormat.COW}
    assert system.tags_service().list()


def test_search_and_ovf(connection: Any) -> None:
    vms = connection.system_service().vms_service()
    first = vms.list()[0]
    assert [vm.id for vm in vms.list(search=f"name={first.name}")] == [first.id]
    assert vms.list(search="name=nosuchvm*") == []
    full = vms.vm_service(first.id).get(all_content=True)
    configuration = full.initialization.configuration
    assert configuration.type == types.ConfigurationType.OVF
    assert "ovf:Envelope" in configuration.data


def test_wrong_password_is_refused(lab: dict[str, Any]) -> None:
    with pytest.raises(sdk.AuthError), connect(lab, password="wrong") as conn:
        conn.test(raise_exception=True)


def test_unknown_id_is_not_found(connection: Any) -> None:
    with pytest.raises(sdk.NotFoundError):
        connection.system_service().vms_service().vm_service("no-such-vm").get()


def test_malformed_body_is_a_bad_request_fault(lab: dict[str, Any], connection: Any) -> None:
    response = httpx.post(
        lab["engine"]["url"] + "/vms",
        content=b"<vm><name>broken",
        headers={
            "Authorization": f"Bearer {connection.authenticate()}",
            "Content-Type": "application/xml",
            "Version": "4",
        },
        verify=lab["engine"]["ca_file"],
    )
    assert response.status_code == 400
    assert "<fault>" in response.text


def test_snapshot_locks_the_vm_until_ready(connection: Any) -> None:
    vm = find_vm(connection, "name=web01")
    snapshots = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    with snapshot(connection, vm) as snap:
        assert snap.snapshot_status == types.SnapshotStatus.OK
        second = snapshots.add(types.Snapshot(description="second", persist_memorystate=False))
        with pytest.raises(sdk.Error) as locked:
            snapshots.add(types.Snapshot(description="third", persist_memorystate=False))
        assert locked.value.code == 409
        service = snapshots.snapshot_service(second.id)
        wait_for(lambda: service.get().snapshot_status == types.SnapshotStatus.OK, "second OK")
        service.remove()
        wait_for(lambda: all(s.id != second.id for s in snapshots.list()), "second removed")
    assert [s.snapshot_type for s in snapshots.list()] == [types.SnapshotType.ACTIVE]


def test_full_and_incremental_backup(lab: dict[str, Any], connection: Any, tmp_path: Path) -> None:
    vm, disk = find_disk(connection, types.DiskFormat.COW, types.StorageType.NFS)
    domain = domain_of(connection, disk)
    index = [d.id for d in vm_disks(connection, vm)].index(disk.id)

    with vm_backup(connection, vm, [disk]) as full:
        spec = types.ImageTransfer(
            disk=types.Disk(id=disk.id),
            backup=types.Backup(id=full.id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
        with image_transfer(connection, spec) as transfer:
            lab_write(lab, vm.name, index, offset=0, length=MiB)  # arrives during the backup
            image = download(lab, transfer, tmp_path / "full.raw")
    assert full.to_checkpoint_id
    before_path = volume_path(lab, domain, disk.id, wait_disk_ok(connection, disk.id).image_id)

    offset, length = 5 * MiB + 4096, 100 * 1024
    lab_write(lab, vm.name, index, offset=offset, length=length)
    with vm_backup(connection, vm, [disk], from_checkpoint=full.to_checkpoint_id) as incremental:
        spec = types.ImageTransfer(
            disk=types.Disk(id=disk.id),
            backup=types.Backup(id=incremental.id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
        with image_transfer(connection, spec) as transfer:
            client = imageio.ImageioClient(transfer.transfer_url, cafile=lab["engine"]["ca_file"])
            dirty = [e for e in client.extents("dirty") if e.dirty]
            _apply_extents(client, dirty, image)
    start, end = dirty[0].start, dirty[-1].start + dirty[-1].length
    # the write during the full backup and the one after it, nothing else
    assert start == 0
    covered = sum(e.length for e in dirty)
    assert covered <= MiB + _aligned_span(offset, length)
    assert any(e.start <= offset and e.start + e.length >= offset + length for e in dirty)
    assert end <= offset + length + GRANULARITY
    now = guest_view(volume_path(lab, domain, disk.id, before_path.name), tmp_path / "now.raw")
    assert sha256(image) == sha256(now)


def _aligned_span(offset: int, length: int) -> int:
    first = offset // GRANULARITY * GRANULARITY
    last = -(-(offset + length) // GRANULARITY) * GRANULARITY
    return last - first


def _apply_extents(client: Any, extents: list[Any], image: Path) -> None:
    with image.open("r+b") as f:
        for extent in extents:
            buffer = bytearray(extent.length)
            client.read(extent.start, buffer)
            f.seek(extent.start)
            f.write(buffer)


def test_upload_into_a_new_disk(lab: dict[str, Any], connection: Any, tmp_path: Path) -> None:
    system = connection.system_service()
    nfs = next(
        sd
        for sd in system.storage_domains_service().list()
        if sd.storage.type == types.StorageType.NFS
    )
    disk = system.disks_service().add(
        types.Disk(
            name="uploaded",
            format=types.DiskFormat.COW,
            provisioned_size=16 * MiB,
            sparse=True,
            storage_domains=[types.StorageDomain(id=nfs.id)],
        )
    )
    wait_disk_ok(connection, disk.id)
    source = tmp_path / "source.raw"
    with source.open("wb") as f:
        f.truncate(16 * MiB)
        f.seek(3 * MiB)
        f.write(bytes(range(256)) * 4096)
    upload = types.ImageTransfer(
        disk=types.Disk(id=disk.id),
        format=types.DiskFormat.RAW,
        direction=types.ImageTransferDirection.UPLOAD,
    )
    with image_transfer(connection, upload) as transfer:
        imageio.upload(str(source), transfer.transfer_url, lab["engine"]["ca_file"])
    back = types.ImageTransfer(
        disk=types.Disk(id=disk.id),
        format=types.DiskFormat.RAW,
        direction=types.ImageTransferDirection.DOWNLOAD,
    )
    with image_transfer(connection, back) as transfer:
        copy = download(lab, transfer, tmp_path / "copy.raw")
    assert sha256(copy) == sha256(source)
    system.disks_service().disk_service(disk.id).remove()


def test_download_through_the_engine_proxy(
    lab: dict[str, Any], connection: Any, tmp_path: Path
) -> None:
    vm, disk = find_disk(connection, types.DiskFormat.RAW, types.StorageType.NFS)
    with snapshot(connection, vm) as snap:
        spec = types.ImageTransfer(
            snapshot=types.DiskSnapshot(id=disk.image_id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
        with image_transfer(connection, spec) as transfer:
            assert transfer.proxy_url and transfer.proxy_url != transfer.transfer_url
            imageio.download(
                transfer.proxy_url,
                str(tmp_path / "proxied.raw"),
                lab["engine"]["ca_file"],
                fmt="raw",
            )
        expected = volume_path(lab, domain_of(connection, disk), disk.id, disk.image_id)
        assert snap.snapshot_status == types.SnapshotStatus.OK
        assert sha256(tmp_path / "proxied.raw") == sha256(expected)


def test_disk_snapshot_attached_to_a_proxy_vm(
    lab: dict[str, Any], connection: Any, tmp_path: Path
) -> None:
    vm, disk = find_disk(connection, types.DiskFormat.COW, types.StorageType.NFS)
    vms = connection.system_service().vms_service()
    for proxy in vms.list(search="name=drover-proxy*"):
        attachments = vms.vm_service(proxy.id).disk_attachments_service()
        scsi = bool(proxy.virtio_scsi and proxy.virtio_scsi.enabled)
        with snapshot(connection, vm) as snap:
            volume = volume_path(lab, domain_of(connection, disk), disk.id, disk.image_id)
            expected = sha256(guest_view(volume, tmp_path / f"{proxy.name}.raw"))
            attachment = attachments.add(
                types.DiskAttachment(
                    disk=types.Disk(id=disk.id, snapshot=types.Snapshot(id=snap.id)),
                    interface=types.DiskInterface.VIRTIO_SCSI
                    if scsi
                    else types.DiskInterface.VIRTIO,
                    bootable=False,
                    active=True,
                )
            )
            name = f"scsi-0QEMU_QEMU_HARDDISK_{disk.id}" if scsi else f"virtio-{disk.id[:20]}"
            device = Path(lab["proxies_root"]) / proxy.name / "dev/disk/by-id" / name
            wait_for(device.exists, f"{device} to appear")
            assert sha256(device) == expected
            attachments.attachment_service(attachment.id).remove()
            wait_for(lambda: not device.exists(), f"{device} to disappear")  # noqa: B023


def test_read_a_block_volume_over_ssh(lab: dict[str, Any], connection: Any) -> None:
    for fmt in (types.DiskFormat.COW, types.DiskFormat.RAW):
        try:
            _vm, disk = find_disk(connection, fmt, types.StorageType.ISCSI)
            break
        except AssertionError:
            continue
    host = lab["hosts"][0]
    sd_id = disk.storage_domains[0].id
    path = f"{host['mount_root']}/blockSD/{sd_id}/images/{disk.id}/{disk.image_id}"
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    ssh.connect(
        host["address"],
        port=host["ssh_port"],
        username=host["ssh_user"],
        key_filename=host["ssh_key"],
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        status, _ = _run(ssh, f"qemu-img info --output json {path}")
        assert status != 0, "an inactive logical volume must not be readable"
        assert _run(ssh, f"lvchange -ay {sd_id}/{disk.image_id}")[0] == 0
        status, out = _run(ssh, f"qemu-img info --output json {path}")
        assert status == 0
        info = json.loads(out)
        assert info["virtual-size"] == disk.provisioned_size
        status, digest = _run(ssh, f"sha256sum {path}")
        _, stdout, _ = ssh.exec_command(f"cat {path}")
        import hashlib

        assert hashlib.sha256(stdout.read()).hexdigest() == digest.split()[0]
    finally:
        _run(ssh, f"lvchange -an {sd_id}/{disk.image_id}")
        ssh.close()


def _run(ssh: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = ssh.exec_command(command)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out
