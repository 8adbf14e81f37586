"""The lab engine driven by the real ovirtsdk4.Connection, over HTTPS, with a fake data plane."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import ovirtsdk4 as sdk
import pytest
from ovirtsdk4 import types

from lab.engine import EngineServer, Timings
from lab.engine.fakeplane import FakeDataPlane
from lab.engine.inventory import DataCenter, stable_id
from lab.estate import EstateConfig, build_estate, host_specs
from lab.pki import CertificateAuthority
from tests.integration.engine_client import snapshot

PASSWORD = "lab-secret"
USER = "admin@internal"
FAST = Timings(
    disk_op=0.05,
    snapshot=0.3,
    transfer_init=0.1,
    transfer_final=0.05,
    backup_step=0.05,
    vm_power=0.05,
    finished_ttl=1.0,
    monitor_interval=0.1,
    guest_report=0.3,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def lab(ca: CertificateAuthority) -> Iterator[tuple[EngineServer, FakeDataPlane]]:
    config = EstateConfig(clusters=2, vms=4)
    dataplane = FakeDataPlane(host_specs(config))
    inventory = build_estate(config, dataplane)
    cert, key = ca.issue("engine", ["localhost", "127.0.0.1"])
    server = EngineServer(inventory, dataplane, cert, key, password=PASSWORD, timings=FAST)
    server.start()
    yield server, dataplane
    server.stop()


@pytest.fixture(scope="module")
def engine(lab: tuple[EngineServer, FakeDataPlane]) -> EngineServer:
    return lab[0]


@pytest.fixture(scope="module")
def dataplane(lab: tuple[EngineServer, FakeDataPlane]) -> FakeDataPlane:
    return lab[1]


@pytest.fixture(scope="module")
def conn(engine: EngineServer, ca: CertificateAuthority) -> Iterator[sdk.Connection]:
    connection = sdk.Connection(
        url=engine.url, username=USER, password=PASSWORD, ca_file=str(ca.ca_file)
    )
    yield connection
    connection.close()


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def vm_named(conn: sdk.Connection, name: str) -> types.Vm:
    return conn.system_service().vms_service().list(search=f"name={name}")[0]


def raw_request(
    engine: EngineServer, ca: CertificateAuthority, path: str, body: bytes, token: str | None
) -> tuple[int, str, str]:
    base = engine.url.rsplit("/ovirt-engine/api", 1)[0]
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("Content-Type", "application/xml")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    try:
        with urllib.request.urlopen(request, context=context) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


# SSO and the API root
def test_login_and_api_root(conn: sdk.Connection) -> None:
    api = conn.system_service().get()
    assert api.product_info.name == "oVirt Engine"
    assert api.product_info.version.major == 4 and api.product_info.version.minor == 5
    assert api.summary.vms.total == 8


def test_wrong_password_is_auth_error(engine: EngineServer, ca: CertificateAuthority) -> None:
    connection = sdk.Connection(
        url=engine.url, username=USER, password="wrong", ca_file=str(ca.ca_file)
    )
    with pytest.raises(sdk.AuthError, match="access_denied"):
        connection.system_service().get()
    connection.close(logout=False)


def test_api_needs_a_token(engine: EngineServer, ca: CertificateAuthority) -> None:
    status, _, _ = raw_request(engine, ca, "/ovirt-engine/api/vms", b"<vm/>", None)
    assert status == 401


def test_malformed_xml_is_a_400_fault(
    engine: EngineServer, ca: CertificateAuthority, conn: sdk.Connection
) -> None:
    token = conn.authenticate()
    status, content_type, body = raw_request(engine, ca, "/ovirt-engine/api/vms", b"<vm><na", token)
    assert status == 400
    assert content_type.startswith("application/xml")
    assert ET.fromstring(body).tag == "fault"


# listings
def test_static_collections(conn: sdk.Connection) -> None:
    system = conn.system_service()
    assert [dc.name for dc in system.data_centers_service().list()] == ["Default"]
    assert [c.name for c in system.clusters_service().list()] == ["cluster1", "cluster2"]
    hosts = system.hosts_service().list()
    assert [(h.name, h.status, h.address) for h in hosts] == [
        ("host1", types.HostStatus.UP, "127.0.0.1"),
        ("host2", types.HostStatus.UP, "127.0.0.1"),
    ]
    domains = {sd.name: sd for sd in system.storage_domains_service().list()}
    assert domains["nfs-data"].storage.type == types.StorageType.NFS
    assert domains["nfs-data"].storage.path == "/exports/data"
    assert domains["gluster-data"].storage.type == types.StorageType.GLUSTERFS
    assert domains["iscsi-data"].storage.type == types.StorageType.ISCSI
    assert all(sd.available > 0 for sd in domains.values())
    assert {t.name for t in system.tags_service().list()} >= {"prod", "db", "drover-proxy"}
    sd_disks = conn.follow_link(domains["iscsi-data"].disks)
    assert sd_disks


def test_vm_search(conn: sdk.Connection) -> None:
    vms = conn.system_service().vms_service()
    assert len(vms.list()) == 8
    assert [v.name for v in vms.list(search="name=db01")] == ["db01"]
    assert sorted(v.name for v in vms.list(search="name=drover-proxy-*")) == [
        "drover-proxy-cluster1",
        "drover-proxy-cluster1-b",
        "drover-proxy-cluster2",
        "drover-proxy-cluster2-b",
    ]
    proxies = {v.name: v.virtio_scsi.enabled for v in vms.list(search="tag=drover-proxy")}
    assert proxies == {
        "drover-proxy-cluster1": True,
        "drover-proxy-cluster1-b": True,
        "drover-proxy-cluster2": False,
        "drover-proxy-cluster2-b": True,
    }
    assert [v.name for v in vms.list(search="tag=db")] == ["db01"]
    assert sorted(v.name for v in vms.list(search="cluster=cluster1 and status=up")) == [
        "app01",
        "drover-proxy-cluster1",
        "drover-proxy-cluster1-b",
        "web01",
    ]
    assert [v.name for v in vms.list(search="tag=prod and name=web*")] == ["web01"]
    tags = conn.follow_link(vm_named(conn, "db01").tags)
    assert sorted(t.name for t in tags) == ["db", "prod"]


def test_unknown_id_is_not_found(conn: sdk.Connection) -> None:
    with pytest.raises(sdk.NotFoundError):
        conn.system_service().vms_service().vm_service("no-such-vm").get()


def test_all_content_returns_the_ovf(conn: sdk.Connection) -> None:
    vm = vm_named(conn, "db01")
    full = conn.system_service().vms_service().vm_service(vm.id).get(all_content=True)
    configuration = full.initialization.configuration
    assert configuration.type == types.ConfigurationType.OVF
    root = ET.fromstring(configuration.data)
    assert root.find("Content/Name").text == "db01"
    attachments = conn.follow_link(vm.disk_attachments)
    refs = [d.get("{http://schemas.dmtf.org/ovf/envelope/1/}fileRef") for d in root.iter("Disk")]
    assert sorted(r.split("/")[0] for r in refs) == sorted(a.disk.id for a in attachments)


def test_freeze_needs_a_guest_agent(conn: sdk.Connection) -> None:
    vms = conn.system_service().vms_service()
    vms.vm_service(vm_named(conn, "web01").id).freeze_filesystems()
    vms.vm_service(vm_named(conn, "web01").id).thaw_filesystems()
    with pytest.raises(sdk.Error, match="guest agent") as failure:
        vms.vm_service(vm_named(conn, "app01").id).freeze_filesystems()
    assert failure.value.code == 400


# snapshots
def test_snapshot_lifecycle(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    vm = vm_named(conn, "web01")
    vm_service = conn.system_service().vms_service().vm_service(vm.id)
    disk_id = conn.follow_link(vm.disk_attachments)[0].disk.id
    disks = conn.system_service().disks_service()
    before = disks.disk_service(disk_id).get().image_id
    snaps = vm_service.snapshots_service()
    snap = snaps.add(types.Snapshot(description="backup", persist_memorystate=False))
    assert snap.snapshot_status == types.SnapshotStatus.LOCKED
    with pytest.raises(sdk.Error) as conflict:
        snaps.add(types.Snapshot(description="second"))
    assert conflict.value.code == 409
    wait_for(lambda: snaps.snapshot_service(snap.id).get().snapshot_status.value == "ok")
    assert disks.disk_service(disk_id).get().image_id != before
    snap_disks = snaps.snapshot_service(snap.id).disks_service().list()
    assert [(d.id, d.image_id) for d in snap_disks] == [(disk_id, before)]
    assert {s.snapshot_type for s in snaps.list()} == {
        types.SnapshotType.ACTIVE,
        types.SnapshotType.REGULAR,
    }
    assert dataplane.called("hold") and not dataplane.holds
    snaps.snapshot_service(snap.id).remove()
    wait_for(lambda: len(snaps.list()) == 1)
    assert disks.disk_service(disk_id).get().image_id == before
    assert dataplane.called("merge_into_parent")


def test_snapshot_attached_to_proxy(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    vms = conn.system_service().vms_service()
    vm = vm_named(conn, "db01")
    snaps = vms.vm_service(vm.id).snapshots_service()
    snap = snaps.add(types.Snapshot(description="for proxy", persist_memorystate=False))
    wait_for(lambda: snaps.snapshot_service(snap.id).get().snapshot_status.value == "ok")
    disk_id = snaps.snapshot_service(snap.id).disks_service().list()[0].id
    scsi_proxy = vm_named(conn, "drover-proxy-cluster1")
    blk_proxy = vm_named(conn, "drover-proxy-cluster2")
    attachment = types.DiskAttachment(
        disk=types.Disk(id=disk_id, snapshot=types.Snapshot(id=snap.id)),
        interface=types.DiskInterface.VIRTIO_SCSI,
        active=True,
    )
    with pytest.raises(sdk.Error, match="VirtIO-SCSI is disabled") as refused:
        vms.vm_service(blk_proxy.id).disk_attachments_service().add(attachment)
    assert refused.value.code == 409  # CANNOT_PERFORM_ACTION_VIRTIO_SCSI_IS_DISABLED: CONFLICT
    attachments = vms.vm_service(scsi_proxy.id).disk_attachments_service()
    added = attachments.add(attachment)
    assert added.logical_name is None  # the guest agent reports it later
    assert ("drover-proxy-cluster1", f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}") in dataplane.devices
    scsi_name = wait_for(lambda: attachments.attachment_service(disk_id).get().logical_name)
    assert scsi_name.endswith(f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}")
    with pytest.raises(sdk.Error) as attached:
        snaps.snapshot_service(snap.id).remove()
    assert attached.value.code == 409
    attachment.interface = types.DiskInterface.VIRTIO
    blk_attachments = vms.vm_service(blk_proxy.id).disk_attachments_service()
    assert blk_attachments.add(attachment).logical_name is None
    blk_name = wait_for(lambda: blk_attachments.attachment_service(disk_id).get().logical_name)
    assert blk_name.endswith(f"virtio-{disk_id[:20]}")
    blk_attachments.attachment_service(disk_id).remove()
    attachments.attachment_service(disk_id).remove()
    assert not dataplane.devices
    snaps.snapshot_service(snap.id).remove()
    wait_for(lambda: len(snaps.list()) == 1)


def _new_disk(conn: sdk.Connection, name: str, domain: str = "nfs-data") -> str:
    disks = conn.system_service().disks_service()
    disk = disks.add(
        types.Disk(
            name=name,
            format=types.DiskFormat.COW,
            provisioned_size=16 << 20,
            storage_domains=[types.StorageDomain(name=domain)],
        )
    )
    wait_for(lambda: disks.disk_service(disk.id).get().status == types.DiskStatus.OK)
    return str(disk.id)


def _attach(service: Any, disk_id: str, snapshot_id: str | None = None, **kw: Any) -> Any:
    disk = types.Disk(id=disk_id, snapshot=types.Snapshot(id=snapshot_id) if snapshot_id else None)
    return service.add(
        types.DiskAttachment(disk=disk, interface=types.DiskInterface.VIRTIO_SCSI, **kw)
    )


def _refused(code: int, match: str, call: Callable[[], Any]) -> None:
    with pytest.raises(sdk.Error, match=match) as refused:
        call()
    assert refused.value.code == code


# AttachDiskToVmCommand.validate and BackendDiskAttachmentsResource.attachDiskToVm
def test_attach_as_the_engine(
    conn: sdk.Connection, engine: EngineServer, dataplane: FakeDataPlane
) -> None:
    proxy = vm_named(conn, "drover-proxy-cluster1-b")
    attachments = (
        conn.system_service().vms_service().vm_service(proxy.id).disk_attachments_service()
    )
    disk_id = _new_disk(conn, "restored-through-proxy")
    device = ("drover-proxy-cluster1-b", f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}")
    # `active` unset: attached, not plugged
    assert _attach(attachments, disk_id, bootable=False).active is False
    assert device not in dataplane.devices
    _refused(409, "already attached to VM", lambda: _attach(attachments, disk_id, active=True))
    attachments.attachment_service(disk_id).update(types.DiskAttachment(active=True))
    assert device in dataplane.writable_devices  # a disk attached read-write: written back
    attachments.attachment_service(disk_id).remove()
    assert device not in dataplane.devices
    _refused(
        409,
        "already marked as boot",
        lambda: _attach(attachments, disk_id, bootable=True, active=True),
    )
    _refused(400, "does not exist", lambda: _attach(attachments, "no-such-disk", active=True))
    # a domain of another data center: not in the VM's storage pool
    inv = engine.inventory
    with inv.lock:
        other = DataCenter(stable_id("dc", "other"), "other")
        inv.data_centers[other.id] = other
        domain = inv.domain_by_name("nfs-data")
        home, domain.dc_id = domain.dc_id, other.id
    try:
        _refused(
            409,
            "target Data Center does not contain",
            lambda: _attach(attachments, disk_id, active=True),
        )
    finally:
        with inv.lock:
            domain.dc_id = home
            del inv.data_centers[other.id]
    conn.system_service().disks_service().disk_service(disk_id).remove()


def test_snapshots_and_disks_held_by_a_proxy_as_the_engine(
    conn: sdk.Connection, dataplane: FakeDataPlane
) -> None:
    vms = conn.system_service().vms_service()
    vm = vm_named(conn, "app01")
    snaps = vms.vm_service(vm.id).snapshots_service()
    first = snaps.add(types.Snapshot(description="first", persist_memorystate=False))
    wait_for(lambda: snaps.snapshot_service(first.id).get().snapshot_status.value == "ok")
    second = snaps.add(types.Snapshot(description="second", persist_memorystate=False))
    wait_for(lambda: snaps.snapshot_service(second.id).get().snapshot_status.value == "ok")
    disk_id = snaps.snapshot_service(first.id).disks_service().list()[0].id
    proxy = vm_named(conn, "drover-proxy-cluster1")
    attachments = vms.vm_service(proxy.id).disk_attachments_service()
    _refused(
        409,
        "only allowed for regular snapshots",
        lambda: _attach(attachments, disk_id, _active_snapshot(snaps), active=True),
    )
    assert _attach(attachments, disk_id, first.id, active=True).read_only
    assert ("drover-proxy-cluster1", f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}") not in (
        dataplane.writable_devices
    )
    # RemoveSnapshotCommand: any snapshot of the VM, while a disk snapshot of it is attached
    _refused(
        409,
        "attached to other VMs",
        lambda: snaps.snapshot_service(second.id).remove(),
    )
    # RemoveDiskCommand: refused while the disk is plugged into a VM that is not Down
    disks = conn.system_service().disks_service()
    held = _new_disk(conn, "held-by-a-proxy")
    _attach(attachments, held, active=True)
    _refused(409, "At least one of the VMs is not down", disks.disk_service(held).remove)
    attachments.attachment_service(held).update(types.DiskAttachment(active=False))
    disks.disk_service(held).remove()  # unplugged: removed, and detached with it
    assert all(a.disk.id != held for a in attachments.list())
    attachments.attachment_service(disk_id).remove()
    snaps.snapshot_service(second.id).remove()
    wait_for(lambda: all(x.id != second.id for x in snaps.list()))
    snaps.snapshot_service(first.id).remove()
    wait_for(lambda: len(snaps.list()) == 1)


def _active_snapshot(snaps: Any) -> str:
    return next(s.id for s in snaps.list() if s.snapshot_type == types.SnapshotType.ACTIVE)


# image transfers
def _wait_phase(service: Any, phase: types.ImageTransferPhase) -> types.ImageTransfer:
    return wait_for(lambda: (t := service.get()).phase == phase and t)


def _snapshot_volume(conn: sdk.Connection, vm: types.Vm) -> str:
    """The volume a disk-only snapshot of `vm` freezes: its first disk's active volume now
    (as the SDK's download_disk_snapshot.py, since the engine refuses a plain transfer of a
    disk plugged into a VM that is not Down)."""
    disk_id = conn.follow_link(vm.disk_attachments)[0].disk.id
    return conn.system_service().disks_service().disk_service(disk_id).get().image_id


def test_download_transfer(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    vm = vm_named(conn, "file01")
    disk = conn.follow_link(vm.disk_attachments)[0].disk
    volume = _snapshot_volume(conn, vm)
    transfers = conn.system_service().image_transfers_service()
    disks = conn.system_service().disks_service()
    vm_snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
    with snapshot(conn, vm) as snap:
        snap_disks = vm_snapshots.snapshot_service(snap.id).disks_service().list()
        assert [(d.id, d.image_id) for d in snap_disks] == [(disk.id, volume)]
        spec = types.ImageTransfer(
            snapshot=types.DiskSnapshot(id=volume),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
            inactivity_timeout=60,
        )
        transfer = transfers.add(spec)
        assert transfer.phase == types.ImageTransferPhase.INITIALIZING
        service = transfers.image_transfer_service(transfer.id)
        ready = _wait_phase(service, types.ImageTransferPhase.TRANSFERRING)
        assert ready.transfer_url.endswith(f"/images/{transfer.id}")
        assert ready.proxy_url.endswith(f"/images/{transfer.id}")
        assert ready.host.id
        assert ready.disk.id == disk.id and ready.snapshot.id == volume
        assert disks.disk_service(disk.id).get().status == types.DiskStatus.LOCKED
        with pytest.raises(sdk.Error, match="is locked") as busy:
            transfers.add(spec)
        assert busy.value.code == 409
        export = dataplane.exports[-1]
        assert export.backing_chain and not export.writable
        service.finalize()
        _wait_phase(service, types.ImageTransferPhase.FINISHED_SUCCESS)
        assert disks.disk_service(disk.id).get().status == types.DiskStatus.OK
        assert export.closed and transfer.id not in dataplane.tickets
        wait_for(lambda: transfer.id not in {t.id for t in transfers.list()}, timeout=5)
        with pytest.raises(sdk.NotFoundError):
            service.get()


def test_transfer_cancel_and_inactivity(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    vm = vm_named(conn, "web01")
    disk = conn.follow_link(vm.disk_attachments)[0].disk
    volume = _snapshot_volume(conn, vm)
    transfers = conn.system_service().image_transfers_service()
    disks = conn.system_service().disks_service()
    with snapshot(conn, vm):
        spec = types.ImageTransfer(
            snapshot=types.DiskSnapshot(id=volume), direction=types.ImageTransferDirection.DOWNLOAD
        )
        first = transfers.add(spec)
        service = transfers.image_transfer_service(first.id)
        _wait_phase(service, types.ImageTransferPhase.TRANSFERRING)
        service.cancel()
        _wait_phase(service, types.ImageTransferPhase.FINISHED_FAILURE)
        assert first.id not in dataplane.tickets
        # an idle download is cancelled (timeout_policy legacy: only uploads are paused)
        spec.inactivity_timeout = 1
        second = transfers.add(spec)
        assert second.timeout_policy == types.ImageTransferTimeoutPolicy.LEGACY
        service = transfers.image_transfer_service(second.id)
        _wait_phase(service, types.ImageTransferPhase.TRANSFERRING)
        _wait_phase(service, types.ImageTransferPhase.FINISHED_FAILURE)
        assert second.id not in dataplane.tickets and not dataplane.holds
        assert disks.disk_service(disk.id).get().status == types.DiskStatus.OK


def test_upload_to_a_new_disk(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    system = conn.system_service()
    nfs = system.storage_domains_service().list(search="name=nfs-data")[0]
    disks = system.disks_service()
    disk = disks.add(
        types.Disk(
            name="restored",
            format=types.DiskFormat.COW,
            provisioned_size=64 << 20,
            storage_domains=[types.StorageDomain(id=nfs.id)],
            backup=types.DiskBackup.INCREMENTAL,
        )
    )
    wait_for(lambda: disks.disk_service(disk.id).get().status == types.DiskStatus.OK)
    transfers = system.image_transfers_service()
    transfer = transfers.add(
        types.ImageTransfer(
            disk=types.Disk(id=disk.id),
            direction=types.ImageTransferDirection.UPLOAD,
            format=types.DiskFormat.COW,
        )
    )
    service = transfers.image_transfer_service(transfer.id)
    _wait_phase(service, types.ImageTransferPhase.TRANSFERRING)
    assert dataplane.exports[-1].writable
    service.finalize()
    _wait_phase(service, types.ImageTransferPhase.FINISHED_SUCCESS)
    disks.disk_service(disk.id).remove()
    with pytest.raises(sdk.NotFoundError):
        disks.disk_service(disk.id).get()


# backups and checkpoints
def _backup(vm_service: Any, **fields: Any) -> types.Backup:
    backups = vm_service.backups_service()
    backup = backups.add(types.Backup(**fields))
    service = backups.backup_service(backup.id)
    wait_for(lambda: service.get().phase == types.BackupPhase.READY)
    return service.get()


def _finalize(vm_service: Any, backup: types.Backup) -> None:
    service = vm_service.backups_service().backup_service(backup.id)
    service.finalize()
    wait_for(lambda: service.get().phase == types.BackupPhase.SUCCEEDED)


def test_full_then_incremental_backup(conn: sdk.Connection, dataplane: FakeDataPlane) -> None:
    vm = vm_named(conn, "db01")
    vm_service = conn.system_service().vms_service().vm_service(vm.id)
    disk_ids = [a.disk.id for a in conn.follow_link(vm.disk_attachments)]
    full = _backup(vm_service, disks=[types.Disk(id=d) for d in disk_ids])
    assert full.to_checkpoint_id and full.from_checkpoint_id is None
    with pytest.raises(sdk.Error) as busy:
        vm_service.backups_service().add(types.Backup(disks=[types.Disk(id=disk_ids[0])]))
    assert busy.value.code == 409
    assert all(
        mode.backup_mode == types.DiskBackupMode.FULL
        for mode in vm_service.backups_service().backup_service(full.id).disks_service().list()
    )
    assert set(dataplane.holds) == set(disk_ids)
    _finalize(vm_service, full)
    assert not dataplane.holds
    checkpoints = vm_service.checkpoints_service().list()
    assert [c.id for c in checkpoints] == [full.to_checkpoint_id]

    with pytest.raises(sdk.Error, match="Checkpoint") as invalid:
        vm_service.backups_service().add(
            types.Backup(disks=[types.Disk(id=disk_ids[0])], from_checkpoint_id="nope")
        )
    assert invalid.value.code == 400

    incremental = _backup(
        vm_service,
        disks=[types.Disk(id=disk_ids[0])],
        from_checkpoint_id=full.to_checkpoint_id,
    )
    transfers = conn.system_service().image_transfers_service()
    transfer = transfers.add(
        types.ImageTransfer(
            disk=types.Disk(id=disk_ids[0]),
            backup=types.Backup(id=incremental.id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
    )
    service = transfers.image_transfer_service(transfer.id)
    _wait_phase(service, types.ImageTransferPhase.TRANSFERRING)
    assert dataplane.exports[-1].dirty_bitmap == full.to_checkpoint_id
    assert dataplane.tickets[transfer.id].dirty
    service.finalize()
    _wait_phase(service, types.ImageTransferPhase.FINISHED_SUCCESS)
    _finalize(vm_service, incremental)

    checkpoints = vm_service.checkpoints_service().list()
    assert [(c.id, c.parent_id) for c in checkpoints] == [
        (full.to_checkpoint_id, None),
        (incremental.to_checkpoint_id, full.to_checkpoint_id),
    ]
    # engine >= 4.4.7 (DeleteVmCheckpointCommand) removes any checkpoint, not only the root:
    # its child takes its parent
    latest = _backup(
        vm_service,
        disks=[types.Disk(id=disk_ids[0])],
        from_checkpoint_id=incremental.to_checkpoint_id,
    )
    _finalize(vm_service, latest)
    checkpoints = vm_service.checkpoints_service()
    checkpoints.checkpoint_service(incremental.to_checkpoint_id).remove()  # not the root
    assert [(c.id, c.parent_id) for c in checkpoints.list()] == [
        (full.to_checkpoint_id, None),
        (latest.to_checkpoint_id, full.to_checkpoint_id),
    ]
    checkpoints.checkpoint_service(full.to_checkpoint_id).remove()  # the root
    assert [(c.id, c.parent_id) for c in checkpoints.list()] == [(latest.to_checkpoint_id, None)]


# VM life cycle, disks, lab control
def test_vm_from_ovf_with_a_new_disk(conn: sdk.Connection) -> None:
    system = conn.system_service()
    vms = system.vms_service()
    source = vms.vm_service(vm_named(conn, "web01").id).get(all_content=True)
    added = vms.add(
        types.Vm(
            name="web01-restored",
            cluster=types.Cluster(name="cluster2"),
            initialization=types.Initialization(
                configuration=types.Configuration(
                    type=types.ConfigurationType.OVF, data=source.initialization.configuration.data
                )
            ),
        )
    )
    assert added.status == types.VmStatus.DOWN and added.memory == source.memory
    gluster = system.storage_domains_service().list(search="name=gluster-data")[0]
    disks = system.disks_service()
    disk = disks.add(
        types.Disk(
            name="restored-os",
            format=types.DiskFormat.RAW,
            provisioned_size=16 << 20,
            storage_domains=[types.StorageDomain(id=gluster.id)],
        )
    )
    wait_for(lambda: disks.disk_service(disk.id).get().status == types.DiskStatus.OK)
    vm_service = vms.vm_service(added.id)
    vm_service.disk_attachments_service().add(
        types.DiskAttachment(
            disk=types.Disk(id=disk.id),
            interface=types.DiskInterface.VIRTIO_SCSI,
            bootable=True,
            active=True,
        )
    )
    vm_service.start()
    wait_for(lambda: vm_service.get().status == types.VmStatus.UP)
    with pytest.raises(sdk.Error) as running:
        vm_service.remove()
    assert running.value.code == 409
    vm_service.stop()
    vm_service.remove()
    with pytest.raises(sdk.NotFoundError):
        vm_service.get()
    with pytest.raises(sdk.NotFoundError):
        disks.disk_service(disk.id).get()


def test_disk_move(conn: sdk.Connection) -> None:
    system = conn.system_service()
    disks = system.disks_service()
    disk = conn.follow_link(vm_named(conn, "file01").disk_attachments)[0].disk
    nfs = system.storage_domains_service().list(search="name=nfs-data")[0]
    disks.disk_service(disk.id).move(storage_domain=types.StorageDomain(id=nfs.id))
    assert disks.disk_service(disk.id).get().status == types.DiskStatus.LOCKED
    moved = wait_for(
        lambda: (d := disks.disk_service(disk.id).get()).status == types.DiskStatus.OK and d
    )
    assert moved.storage_domains[0].id == nfs.id


def test_lab_write_endpoint(
    engine: EngineServer, ca: CertificateAuthority, conn: sdk.Connection, dataplane: FakeDataPlane
) -> None:
    token = conn.authenticate()
    body = json.dumps({"offset": 4096, "length": 8192}).encode()
    status, content_type, text = raw_request(
        engine, ca, "/ovirt-engine/lab/vms/app01/disks/1/write", body, token
    )
    assert status == 200 and content_type.startswith("application/json")
    answer = json.loads(text)
    disk = conn.system_service().disks_service().disk_service(answer["disk_id"]).get()
    assert disk.image_id == answer["volume_id"]
    assert dataplane.called("guest_write")[-1][1:] == (4096, 8192)


def test_follow_inlines_disk_attachments(conn: sdk.Connection) -> None:
    vms = conn.system_service().vms_service()
    vm = vms.list(search="name=db01", follow="disk_attachments.disk,tags")[0]
    assert len(vm.disk_attachments) == 2
    assert all(a.disk.provisioned_size for a in vm.disk_attachments)
    assert sorted(t.name for t in vm.tags) == ["db", "prod"]
