"""The lab engine refuses what ovirt-engine 4.5 refuses, and behaves as it does where a lax
lab would hide bugs; driven by the real ovirtsdk4 over HTTPS, with a fake data plane.

Each test names the engine source it follows (ovirt-engine-4.5.5, backend/manager/modules).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import ovirtsdk4 as sdk
import pytest
from ovirtsdk4 import types

from lab.engine import EngineServer, Timings
from lab.engine.fakeplane import FakeDataPlane
from lab.estate import EstateConfig, build_estate, host_specs
from lab.pki import CertificateAuthority

PASSWORD = "lab-secret"
USER = "admin@internal"
IDLE_S = 1  # the lab's default inactivity timeout here (Timings.inactivity_timeout)
GUEST_REPORT_S = 0.5
STRICT = Timings(
    disk_op=0.3,  # also how long a failed upload's disk stays ILLEGAL before its removal
    snapshot=0.2,
    transfer_init=0.1,
    transfer_final=0.05,
    backup_step=0.05,
    vm_power=0.05,
    finished_ttl=10.0,
    monitor_interval=0.1,
    inactivity_timeout=IDLE_S,
    guest_report=GUEST_REPORT_S,
)
Phase = types.ImageTransferPhase
DOWNLOAD, UPLOAD = types.ImageTransferDirection.DOWNLOAD, types.ImageTransferDirection.UPLOAD


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def engine(ca: CertificateAuthority) -> Iterator[EngineServer]:
    config = EstateConfig(clusters=2, vms=4)
    dataplane = FakeDataPlane(host_specs(config))
    inventory = build_estate(config, dataplane)
    cert, key = ca.issue("engine", ["localhost", "127.0.0.1"])
    server = EngineServer(inventory, dataplane, cert, key, password=PASSWORD, timings=STRICT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def conn(engine: EngineServer, ca: CertificateAuthority) -> Iterator[sdk.Connection]:
    connection = sdk.Connection(
        url=engine.url, username=USER, password=PASSWORD, ca_file=str(ca.ca_file)
    )
    yield connection
    connection.close()


# helpers
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


def vm_service(conn: sdk.Connection, name: str) -> Any:
    return conn.system_service().vms_service().vm_service(vm_named(conn, name).id)


def first_disk(conn: sdk.Connection, vm: str) -> types.Disk:
    disk_id = conn.follow_link(vm_named(conn, vm).disk_attachments)[0].disk.id
    return conn.system_service().disks_service().disk_service(disk_id).get()


def new_disk(conn: sdk.Connection, name: str) -> types.Disk:
    system = conn.system_service()
    nfs = system.storage_domains_service().list(search="name=nfs-data")[0]
    disks = system.disks_service()
    disk = disks.add(
        types.Disk(
            name=name,
            format=types.DiskFormat.COW,
            provisioned_size=16 << 20,
            storage_domains=[types.StorageDomain(id=nfs.id)],
        )
    )
    return wait_for(
        lambda: (d := disks.disk_service(disk.id).get()).status == types.DiskStatus.OK and d
    )


def disk_status(conn: sdk.Connection, disk_id: str) -> types.DiskStatus | None:
    """The disk's status; None once it is gone."""
    try:
        return conn.system_service().disks_service().disk_service(disk_id).get().status
    except sdk.NotFoundError:
        return None


def start_transfer(conn: sdk.Connection, **fields: Any) -> Any:
    transfers = conn.system_service().image_transfers_service()
    service = transfers.image_transfer_service(transfers.add(types.ImageTransfer(**fields)).id)
    wait_for(lambda: service.get().phase != Phase.INITIALIZING)  # serving (or already idle)
    return service


def wait_phase(service: Any, *phases: types.ImageTransferPhase) -> types.ImageTransfer:
    return wait_for(lambda: (t := service.get()).phase in phases and t)


def end_transfer(service: Any) -> None:
    service.finalize()
    wait_phase(service, Phase.FINISHED_SUCCESS)


def fault(error: pytest.ExceptionInfo[sdk.Error]) -> tuple[int | None, str]:
    return error.value.code, str(error.value)


def start_backup(vm: Any, **fields: Any) -> types.Backup:
    backups = vm.backups_service()
    backup = backups.add(types.Backup(**fields))
    service = backups.backup_service(backup.id)
    return wait_for(lambda: (b := service.get()).phase == types.BackupPhase.READY and b)


def finalize_backup(vm: Any, backup: types.Backup) -> None:
    service = vm.backups_service().backup_service(backup.id)
    service.finalize()
    wait_for(lambda: service.get().phase == types.BackupPhase.SUCCEEDED)


def take_snapshot(vm: Any, **fields: Any) -> types.Snapshot:
    snaps = vm.snapshots_service()
    snap = snaps.add(types.Snapshot(**fields))
    service = snaps.snapshot_service(snap.id)
    wait_for(lambda: service.get().snapshot_status == types.SnapshotStatus.OK)
    return snap


def remove_snapshot(vm: Any, snap: types.Snapshot) -> None:
    snaps = vm.snapshots_service()
    snaps.snapshot_service(snap.id).remove()
    wait_for(lambda: all(s.id != snap.id for s in snaps.list()))


# 1. TransferDiskImageCommand.validateImageTransfer -> DiskValidator.isDiskPluggedToAnyNonDownVm
def test_transfer_of_a_disk_plugged_into_a_running_vm_is_refused(conn: sdk.Connection) -> None:
    disk = first_disk(conn, "web01")
    transfers = conn.system_service().image_transfers_service()
    expected = (
        "Cannot transfer Virtual Disk. The disk web01_disk1 is plugged to non-Down VMs: web01"
    )
    for direction in (DOWNLOAD, UPLOAD):
        with pytest.raises(sdk.Error) as refused:
            transfers.add(types.ImageTransfer(disk=types.Disk(id=disk.id), direction=direction))
        code, text = fault(refused)
        assert code == 409 and expected in text
    with pytest.raises(sdk.Error) as active:  # the active volume is no disk snapshot
        transfers.add(
            types.ImageTransfer(snapshot=types.DiskSnapshot(id=disk.image_id), direction=DOWNLOAD)
        )
    assert fault(active)[0] == 409

    vm = vm_service(conn, "web01")
    snap = take_snapshot(vm, description="strict", persist_memorystate=False)
    volume = vm.snapshots_service().snapshot_service(snap.id).disks_service().list()[0].image_id
    end_transfer(start_transfer(conn, snapshot=types.DiskSnapshot(id=volume), direction=DOWNLOAD))
    remove_snapshot(vm, snap)

    vm.stop()
    try:
        assert vm.get().status == types.VmStatus.DOWN
        end_transfer(start_transfer(conn, disk=types.Disk(id=disk.id), direction=DOWNLOAD))
    finally:
        vm.start()
        wait_for(lambda: vm.get().status == types.VmStatus.UP)


# 2. StopVmBackupCommand.validate: ACTION_TYPE_FAILED_ACTIVE_IMAGE_TRANSFER_FOR_VM_BACKUP (409)
def test_backup_finalize_is_refused_while_a_transfer_is_active(conn: sdk.Connection) -> None:
    vm = vm_service(conn, "app01")
    disk = first_disk(conn, "app01")
    backup = start_backup(vm, disks=[types.Disk(id=disk.id)])
    service = start_transfer(
        conn,
        disk=types.Disk(id=disk.id),
        backup=types.Backup(id=backup.id),
        direction=DOWNLOAD,
        format=types.DiskFormat.RAW,
    )
    backup_service = vm.backups_service().backup_service(backup.id)
    with pytest.raises(sdk.Error) as refused:
        backup_service.finalize()
    code, text = fault(refused)
    assert code == 409
    assert "Cannot stop VM backup. There is an active image transfer for VM backup" in text
    assert backup_service.get().phase == types.BackupPhase.READY
    end_transfer(service)
    finalize_backup(vm, backup)


# 3. TransferDiskImageCommand.cleanup (upload failure: ILLEGAL) and endWithFailure (RemoveDisk)
def test_a_cancelled_upload_leaves_its_disk_illegal_and_removed(conn: sdk.Connection) -> None:
    disk = new_disk(conn, "strict-cancelled-upload")
    service = start_transfer(conn, disk=types.Disk(id=disk.id), direction=UPLOAD)
    assert disk_status(conn, disk.id) == types.DiskStatus.LOCKED
    service.cancel()
    wait_for(lambda: disk_status(conn, disk.id) == types.DiskStatus.ILLEGAL)
    wait_for(lambda: disk_status(conn, disk.id) is None)
    assert service.get().phase == Phase.FINISHED_FAILURE

    download_disk = new_disk(conn, "strict-cancelled-download")
    service = start_transfer(conn, disk=types.Disk(id=download_disk.id), direction=DOWNLOAD)
    service.cancel()
    wait_phase(service, Phase.FINISHED_FAILURE)
    assert disk_status(conn, download_disk.id) == types.DiskStatus.OK  # downloads leave it be
    conn.system_service().disks_service().disk_service(download_disk.id).remove()


# 4. TransferDiskImageCommand.stopTransferIfNecessary / shouldAbortOnClientInactivityTimeout
@pytest.mark.parametrize(
    ("direction", "policy", "outcome"),
    [
        (UPLOAD, types.ImageTransferTimeoutPolicy.LEGACY, Phase.PAUSED_SYSTEM),
        (UPLOAD, types.ImageTransferTimeoutPolicy.PAUSE, Phase.PAUSED_SYSTEM),
        (UPLOAD, types.ImageTransferTimeoutPolicy.CANCEL, Phase.FINISHED_FAILURE),
        (DOWNLOAD, types.ImageTransferTimeoutPolicy.LEGACY, Phase.FINISHED_FAILURE),
        (DOWNLOAD, None, Phase.FINISHED_FAILURE),
    ],
)
def test_idle_transfers_follow_their_timeout_policy(
    conn: sdk.Connection,
    direction: types.ImageTransferDirection,
    policy: types.ImageTransferTimeoutPolicy | None,
    outcome: types.ImageTransferPhase,
) -> None:
    disk = new_disk(conn, f"strict-idle-{direction.value}-{policy.value if policy else 'none'}")
    service = start_transfer(
        conn, disk=types.Disk(id=disk.id), direction=direction, timeout_policy=policy
    )
    started = service.get()
    assert started.timeout_policy == (policy or types.ImageTransferTimeoutPolicy.LEGACY)
    assert started.inactivity_timeout == IDLE_S  # the lab's configured default
    wait_phase(service, outcome)
    if outcome == Phase.PAUSED_SYSTEM:
        time.sleep(3 * STRICT.monitor_interval)
        assert service.get().phase == Phase.PAUSED_SYSTEM  # stays paused, the disk locked
        assert disk_status(conn, disk.id) == types.DiskStatus.LOCKED
        service.cancel()
        wait_phase(service, Phase.FINISHED_FAILURE)
    if direction == UPLOAD:
        wait_for(lambda: disk_status(conn, disk.id) is None)  # removed, as any failed upload
    else:
        assert disk_status(conn, disk.id) == types.DiskStatus.OK
        conn.system_service().disks_service().disk_service(disk.id).remove()


def test_an_inactivity_timeout_of_zero_never_expires(conn: sdk.Connection) -> None:
    disk = new_disk(conn, "strict-no-timeout")
    service = start_transfer(
        conn, disk=types.Disk(id=disk.id), direction=DOWNLOAD, inactivity_timeout=0
    )
    time.sleep(IDLE_S + 5 * STRICT.monitor_interval)
    assert service.get().phase == Phase.TRANSFERRING
    end_transfer(service)
    conn.system_service().disks_service().disk_service(disk.id).remove()


# 5. DeleteVmCheckpointCommand (any checkpoint; the child takes its parent),
#    StartVmBackupCommand.createVmCheckpoint (description) and validate (backup id used once),
#    TransferDiskImageCommand.isFormatApplicableForBackup (no cow)
def test_backups_and_checkpoints_as_the_engine(conn: sdk.Connection) -> None:
    vm = vm_service(conn, "db01")
    disk_ids = [a.disk.id for a in vm.disk_attachments_service().list()]
    disks = [types.Disk(id=d) for d in disk_ids]
    full = start_backup(vm, disks=disks, description="nightly full")
    assert full.description == "nightly full"
    transfers = conn.system_service().image_transfers_service()
    with pytest.raises(sdk.Error) as cow:
        transfers.add(
            types.ImageTransfer(
                disk=types.Disk(id=disk_ids[0]),
                backup=types.Backup(id=full.id),
                direction=DOWNLOAD,
                format=types.DiskFormat.COW,
            )
        )
    code, text = fault(cow)
    assert code == 400
    assert "The specified format is not applicable for VM backup." in text
    finalize_backup(vm, full)

    with pytest.raises(sdk.Error) as reused:
        vm.backups_service().add(types.Backup(id=full.id, disks=disks))
    code, text = fault(reused)
    assert code == 400 and f"The specified VM backup ID {full.id} already exists." in text

    second = start_backup(vm, disks=disks, from_checkpoint_id=full.to_checkpoint_id)
    finalize_backup(vm, second)
    third = start_backup(vm, disks=disks, from_checkpoint_id=second.to_checkpoint_id)
    finalize_backup(vm, third)
    checkpoints = vm.checkpoints_service()
    first = checkpoints.checkpoint_service(full.to_checkpoint_id).get()
    assert first.description == "nightly full"
    checkpoints.checkpoint_service(second.to_checkpoint_id).remove()  # the middle one
    assert [(c.id, c.parent_id) for c in checkpoints.list()] == [
        (full.to_checkpoint_id, None),
        (third.to_checkpoint_id, full.to_checkpoint_id),
    ]
    checkpoints.checkpoint_service(third.to_checkpoint_id).remove()  # the leaf
    checkpoints.checkpoint_service(full.to_checkpoint_id).remove()
    assert checkpoints.list() == []


# 6. AbstractBackendCollectionResource.getSearchParameters (case_sensitive defaults to false),
#    SyntaxChecker.getPagePhrase (page N of `max`), SearchObjectAutoCompleter (vm_name ASC)
def test_search_case_sensitivity_and_pages(conn: sdk.Connection) -> None:
    vms = conn.system_service().vms_service()
    assert [v.name for v in vms.list(search="name=WEB01")] == ["web01"]
    assert vms.list(search="name=WEB01", case_sensitive=True) == []
    assert [v.name for v in vms.list(search="name=web01", case_sensitive=True)] == ["web01"]
    names = [v.name for v in vms.list()]
    assert names == sorted(names) and len(names) == 8
    assert [v.name for v in vms.list(search="name=* page 2", max=2)] == names[2:4]
    assert [v.name for v in vms.list(search="name=* page 3", max=4)] == []
    assert [v.name for v in vms.list(search="page 1")] == names
    assert vms.list(search="name=* page 2") == []
    hosts = conn.system_service().hosts_service()
    assert [h.name for h in hosts.list(search="name=HOST*", case_sensitive=False)] == [
        "host1",
        "host2",
    ]
    assert [h.name for h in hosts.list(search="name=host* page 2", max=1)] == ["host2"]


# AddExternalEventCommand.validate, BackendEventsResource.add (required fields)
def test_events(conn: sdk.Connection) -> None:
    events = conn.system_service().events_service()
    spec = types.Event(
        origin="drover",
        severity=types.LogSeverity.WARNING,
        custom_id=4242,
        description="backup of web01 is late",
        vm=types.Vm(id=vm_named(conn, "web01").id),
    )
    added = events.add(spec)
    assert added.code == 9802 and added.severity == types.LogSeverity.WARNING
    assert events.event_service(added.id).get().description == "backup of web01 is late"
    assert [e.id for e in events.list(max=1)] == [added.id]  # newest first
    assert events.list(from_=int(added.id)) == []
    with pytest.raises(sdk.Error) as duplicate:
        events.add(spec)
    assert fault(duplicate)[0] == 400
    with pytest.raises(sdk.Error) as ovirt:
        events.add(
            types.Event(origin="oVirt", severity=spec.severity, custom_id=1, description="x")
        )
    assert "Illegal Origin for External Event" in fault(ovirt)[1]
    with pytest.raises(sdk.Error) as incomplete:
        events.add(types.Event(origin="drover", severity=spec.severity, custom_id=2))
    assert fault(incomplete)[0] == 400 and "description" in fault(incomplete)[1]


def test_linked_collections_exist(conn: sdk.Connection) -> None:
    system = conn.system_service()
    vm = vm_named(conn, "file01")
    assert [n.name for n in system.networks_service().list()] == ["ovirtmgmt"]
    devices = conn.follow_link(vm_named(conn, "web01").reported_devices)
    assert [(d.name, d.type) for d in devices] == [("eth0", types.ReportedDeviceType.NETWORK)]
    assert conn.follow_link(vm.reported_devices) == []  # no guest agent
    assert conn.follow_link(vm.permissions)[0].role.id
    stats = {s.name: s.values[0].datum for s in conn.follow_link(vm.statistics)}
    assert stats["memory.installed"] == vm.memory
    disk = first_disk(conn, "file01")
    assert conn.follow_link(disk.permissions)
    assert "data.current.read" in {s.name for s in conn.follow_link(disk.statistics)}

    service = vm_service(conn, "file01")
    snap = take_snapshot(service, description="strict links", persist_memorystate=False)
    base = service.snapshots_service().snapshot_service(snap.id).disks_service().list()[0]
    snapshots = conn.follow_link(system.disks_service().disk_service(disk.id).get().disk_snapshots)
    assert [s.id for s in snapshots] == [base.image_id]
    assert snapshots[0].href.endswith(f"/disks/{disk.id}/disksnapshots/{base.image_id}")
    remove_snapshot(service, snap)

    spare = new_disk(conn, "strict-domain-remove")
    sd_id = spare.storage_domains[0].id
    sd_disks = system.storage_domains_service().storage_domain_service(sd_id).disks_service()
    sd_disks.disk_service(spare.id).remove()
    assert disk_status(conn, spare.id) is None


# 7. BackendSnapshotsResource.doAdd (description required; persist_memorystate only when
#    given) and CreateSnapshotForVmParameters.saveMemory (true by default)
def test_snapshots_save_memory_unless_told_not_to(conn: sdk.Connection) -> None:
    vm = vm_service(conn, "file01")
    with pytest.raises(sdk.Error) as incomplete:
        vm.snapshots_service().add(types.Snapshot(persist_memorystate=False))
    assert fault(incomplete)[0] == 400 and "description" in fault(incomplete)[1]

    with_memory = take_snapshot(vm, description="default")
    assert with_memory.persist_memorystate is True
    service = vm.snapshots_service().snapshot_service(with_memory.id)
    assert service.get().persist_memorystate is True
    remove_snapshot(vm, with_memory)

    disk_only = take_snapshot(vm, description="disks", persist_memorystate=False)
    assert disk_only.persist_memorystate is False
    remove_snapshot(vm, disk_only)

    vm.stop()
    try:
        down = take_snapshot(vm, description="down")
        assert down.persist_memorystate is False  # nothing to save from a VM that is Down
        remove_snapshot(vm, down)
    finally:
        vm.start()
        wait_for(lambda: vm.get().status == types.VmStatus.UP)


# 8. the engine's disk attachment logical_name comes from the guest agent's report
def test_logical_name_appears_once_the_guest_reports_it(conn: sdk.Connection) -> None:
    vm = vm_service(conn, "db01")
    snap = take_snapshot(vm, description="for proxy", persist_memorystate=False)
    disk_id = vm.snapshots_service().snapshot_service(snap.id).disks_service().list()[0].id
    attachments = vm_service(conn, "drover-proxy-cluster1").disk_attachments_service()
    added = attachments.add(
        types.DiskAttachment(
            disk=types.Disk(id=disk_id, snapshot=types.Snapshot(id=snap.id)),
            interface=types.DiskInterface.VIRTIO_SCSI,
            active=True,
        )
    )
    assert added.logical_name is None
    reported = wait_for(lambda: attachments.attachment_service(disk_id).get().logical_name)
    assert reported.endswith(f"scsi-0QEMU_QEMU_HARDDISK_{disk_id}")
    attachments.attachment_service(disk_id).remove()
    remove_snapshot(vm, snap)
