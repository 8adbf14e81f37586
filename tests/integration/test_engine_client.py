"""EngineClient against the lab engine (the real ovirtsdk4 on the wire)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from shared.engine import (
    CheckpointInvalid,
    EngineAuthError,
    EngineClient,
    EngineNotFound,
    NoGuestAgent,
    VmInfo,
)
from shared.errors import ConfigError
from shared.settings import EngineSettings

pytestmark = pytest.mark.integration
MiB = 1 << 20
GUESTS = {"web01", "db01", "app01", "file01"}


def engine_settings(lab: dict[str, Any], **changes: Any) -> EngineSettings:
    values = dict(lab["engine"])
    values.update(changes)
    return EngineSettings(**values)


@pytest.fixture(scope="module")
def client(lab: dict[str, Any]) -> Iterator[EngineClient]:
    with EngineClient.connect(engine_settings(lab)) as engine:
        yield engine


def by_name(client: EngineClient, name: str) -> VmInfo:
    (vm,) = client.find_vms(names=[name])
    return vm


def test_connection_test(client: EngineClient) -> None:
    assert client.test().startswith("oVirt Engine 4.")


def test_wrong_password_is_an_auth_error_without_the_password(lab: dict[str, Any]) -> None:
    with pytest.raises(EngineAuthError) as info:
        EngineClient.connect(engine_settings(lab, password=SecretStr("Wr0ng-Pa55")))
    message = str(info.value)
    assert "Wr0ng-Pa55" not in message and lab["engine"]["password"] not in message
    assert lab["engine"]["username"] in message
    assert "user@domain" in message and not info.value.retryable


def test_bad_url_or_user_name_is_a_config_error(lab: dict[str, Any]) -> None:
    base = lab["engine"]["url"].removesuffix("/ovirt-engine/api")
    with pytest.raises(ConfigError, match="expected https://ENGINE_HOST"):
        EngineClient.connect(engine_settings(lab, url=base))
    with pytest.raises(ConfigError, match="user@domain"):
        EngineClient.connect(engine_settings(lab, username="admin"))


def test_find_vms(client: EngineClient) -> None:
    assert {vm.name for vm in client.find_vms()} >= GUESTS
    assert [vm.name for vm in client.find_vms(names=["web01"], patterns=["db*"])] == [
        "db01",
        "web01",
    ]
    assert {vm.name for vm in client.find_vms(tags=["prod"])} == {"web01", "db01"}
    cluster = by_name(client, "web01").cluster_name
    in_cluster = client.find_vms(clusters=[cluster])
    assert "web01" in {vm.name for vm in in_cluster}
    assert all(vm.cluster_name == cluster for vm in in_cluster)
    prod_here = client.find_vms(patterns=["*0*"], tags=["prod"], clusters=[cluster])
    assert [vm.name for vm in prod_here] == ["web01"]
    assert client.find_vms(names=["nosuchvm"]) == []


def test_vm_details_and_ovf(client: EngineClient) -> None:
    db = by_name(client, "db01")
    assert db.tags == ["db", "prod"] and db.status == "up"
    assert client.vm(db.id) == db
    assert len(db.disks) == 2 and {d.format for d in db.disks} == {"cow"}
    boot = [d for d in db.disks if d.bootable]
    assert len(boot) == 1 and boot[0].backup == "incremental" and boot[0].size > 0
    assert all(d.storage_domain_id and d.image_id and d.interface for d in db.disks)
    assert "ovf:Envelope" in client.vm_ovf(db.id)
    with pytest.raises(EngineNotFound):
        client.vm("00000000-0000-0000-0000-000000000000")


def test_freeze_needs_the_guest_agent(client: EngineClient) -> None:
    web = by_name(client, "web01")
    client.freeze(web.id)
    client.thaw(web.id)
    with pytest.raises(NoGuestAgent) as info:
        client.freeze(by_name(client, "app01").id)
    assert "guest agent" in str(info.value).lower()


def test_storage_domains_and_clusters(client: EngineClient) -> None:
    assert {sd.type for sd in client.storage_domains()} >= {"nfs", "glusterfs", "iscsi"}
    assert len(client.clusters()) == 2


def test_invalid_checkpoint(client: EngineClient) -> None:
    db = by_name(client, "db01")
    with pytest.raises(CheckpointInvalid, match="full backup"):
        client.start_backup(
            db.id, [db.disks[0].id], "11111111-2222-3333-4444-555555555555", timeout_s=30
        )
    assert client.open_backups(db.id) == []


def test_checkpoints_are_listed_oldest_first(client: EngineClient) -> None:
    db = by_name(client, "db01")
    disk_ids = [d.id for d in db.disks]
    made: list[str] = []
    for _ in range(2):
        backup = client.start_backup(db.id, disk_ids, made[-1] if made else None, timeout_s=30)
        client.finalize_backup(db.id, backup.id, timeout_s=30)
        assert backup.to_checkpoint_id
        made.append(backup.to_checkpoint_id)
    listed = client.checkpoints(db.id)
    assert listed[-2:] == made
    while listed:  # only the oldest (root) checkpoint can be removed
        client.remove_checkpoint(db.id, listed[0])
        listed = client.checkpoints(db.id)


def test_cleanup_leaves_nothing_behind(client: EngineClient) -> None:
    file01 = by_name(client, "file01")
    disk_ids = [d.id for d in file01.disks]
    backup = client.start_backup(file01.id, disk_ids, None, timeout_s=30)
    transfer = client.start_transfer(disk_id=disk_ids[0], backup_id=backup.id, timeout_s=30)
    assert [t.id for t in client.open_transfers(vm_id=file01.id)] == [transfer.id]
    assert [b.id for b in client.open_backups(file01.id)] == [backup.id]

    report = client.cleanup_vm(file01.id, disk_ids, timeout_s=30)
    assert report.cancelled_transfers == [transfer.id]
    assert report.finalized_backups == [backup.id]
    assert client.open_transfers(disk_ids=disk_ids) == []
    assert client.open_backups(file01.id) == []
    again = client.cleanup_vm(file01.id, disk_ids, timeout_s=30)
    assert again.cancelled_transfers == [] and again.finalized_backups == []
    client.cancel_transfer(transfer.id)  # already ended: not an error
    assert all(d.status == "ok" for d in client.vm(file01.id).disks)


def test_restore_objects(client: EngineClient) -> None:
    web = by_name(client, "web01")
    nfs = next(sd for sd in client.storage_domains() if sd.type == "nfs")
    vm_id = client.add_vm_from_ovf(client.vm_ovf(web.id), "web01-restored", web.cluster_name)
    try:
        assert vm_id != web.id
        restored = client.vm(vm_id)
        assert restored.name == "web01-restored" and restored.cluster_id == web.cluster_id
        disk = client.add_disk("web01-restored_disk1", 8 * MiB, "cow", nfs.name)
        assert disk.status == "ok" and disk.format == "cow" and disk.storage_domain_id == nfs.id
        client.attach_disk(vm_id, disk.id, bootable=True, interface="virtio_scsi")
        (attached,) = client.vm(vm_id).disks
        assert attached.id == disk.id and attached.bootable
    finally:
        client.remove_vm(vm_id, timeout_s=30)
    with pytest.raises(EngineNotFound):
        client.vm(vm_id)
    client.remove_disk(disk.id, timeout_s=30)  # gone with the VM already: not an error
