"""`drover lab up --engine-version 4.3`: the lab presents an engine without the backup API,
seen through the real ovirtsdk4 and the real ovirt-imageio daemons, and switches back to
4.5 at runtime (POST /ovirt-engine/lab/version, lab.guest_client.set_engine_version)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest
from click.testing import CliRunner

from lab.cli import lab_group
from lab.guest_client import engine_version, set_engine_version
from lab.labfile import read_lab_json
from lab.leftovers import count_leftovers
from lab.processes import lab_process
from shared.errors import DroverError
from tests.integration.engine_client import (
    connect,
    find_disk,
    image_transfer,
    snapshot,
    vm_backup,
)

pytestmark = pytest.mark.integration
QCOW2_MAGIC = b"QFI\xfb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("lab43") / "state"
    args = ("--engine-version", "4.3", "--clusters", "1", "--vms", "2", "--disk-size", "16MiB")
    with lab_process(state, *args) as document:
        yield document


@pytest.fixture(scope="module")
def conn(lab: dict[str, Any]) -> Iterator[sdk.Connection]:
    connection = connect(lab)
    yield connection
    connection.close()


@pytest.fixture(autouse=True)
def presents_4_3(lab: dict[str, Any]) -> Iterator[None]:
    """Every test starts (and leaves the lab) as a 4.3 engine."""
    if engine_version(lab)["version"] != "4.3":
        set_engine_version(lab, "4.3")
    yield
    set_engine_version(lab, "4.3")


def volume_file(lab: dict[str, Any], disk: types.Disk, volume_id: str) -> Path:
    """The volume's file as the lab's host sees it (file and gluster domains)."""
    mount_root = Path(lab["hosts"][0]["mount_root"])
    sd_id = disk.storage_domains[0].id
    (path,) = mount_root.glob(f"**/{sd_id}/images/{disk.id}/{volume_id}")
    return path


def read(lab: dict[str, Any], url: str, length: int | None = None) -> bytes:
    """GET from an imageio daemon (a host's or the engine-side proxy's)."""
    headers = {} if length is None else {"Range": f"bytes=0-{length - 1}"}
    response = httpx.get(url, headers=headers, verify=lab["engine"]["ca_file"], timeout=30)
    assert response.status_code in (200, 206), response.text
    return response.content


def raw_vm_xml(lab: dict[str, Any], conn: sdk.Connection, vm_id: str) -> str:
    response = httpx.get(
        f"{lab['engine']['url']}/vms/{vm_id}",
        headers={"Authorization": f"Bearer {conn.authenticate()}"},
        verify=lab["engine"]["ca_file"],
        timeout=30,
    )
    assert response.status_code == 200
    return response.text


def test_the_api_root_and_clusters_are_4_3(lab: dict[str, Any], conn: sdk.Connection) -> None:
    assert (lab["engine"]["version"], lab["engine"]["full_version"]) == ("4.3", "4.3.10.4-1.el7")
    system = conn.system_service()
    version = system.get().product_info.version
    assert (version.major, version.minor, version.build, version.revision) == (4, 3, 10, 4)
    assert version.full_version == "4.3.10.4-1.el7"
    for cluster in system.clusters_service().list():
        assert (cluster.version.major, cluster.version.minor) == (4, 3)
    for dc in system.data_centers_service().list():
        assert (dc.version.major, dc.version.minor) == (4, 3)
    assert engine_version(lab) == {
        "version": "4.3",
        "full_version": "4.3.10.4-1.el7",
        "cluster_version": "4.3",
        "backup_api": False,
    }


def test_vm_backups_and_checkpoints_do_not_exist(lab: dict[str, Any], conn: sdk.Connection) -> None:
    vm, disk = find_disk(conn, types.DiskFormat.COW, types.StorageType.GLUSTERFS)
    vm_service = conn.system_service().vms_service().vm_service(vm.id)
    with pytest.raises(sdk.NotFoundError) as raised:
        vm_service.backups_service().list()
    assert raised.value.code == 404
    with pytest.raises(sdk.NotFoundError):  # not 405: the path is unknown for every method
        vm_service.backups_service().add(types.Backup(disks=[types.Disk(id=disk.id)]))
    with pytest.raises(sdk.NotFoundError):
        vm_service.checkpoints_service().list()
    xml = raw_vm_xml(lab, conn, vm.id)
    assert 'rel="snapshots"' in xml and 'rel="backups"' not in xml
    assert 'rel="checkpoints"' not in xml
    assert count_leftovers(conn)["backups"] == 0  # the lab's own check copes with 4.3


def test_a_transfer_naming_a_backup_is_refused(conn: sdk.Connection) -> None:
    _, disk = find_disk(conn, types.DiskFormat.COW, types.StorageType.GLUSTERFS)
    transfers = conn.system_service().image_transfers_service()
    with pytest.raises(sdk.Error) as raised:
        transfers.add(
            types.ImageTransfer(
                disk=types.Disk(id=disk.id),
                backup=types.Backup(id=str(uuid.uuid4())),
                direction=types.ImageTransferDirection.DOWNLOAD,
                format=types.DiskFormat.RAW,
            )
        )
    assert raised.value.code == 400
    assert "not supported by engine version 4.3" in str(raised.value)
    assert transfers.list() == []


@pytest.mark.parametrize(
    ("fmt", "storage"),
    [
        (types.DiskFormat.COW, types.StorageType.GLUSTERFS),
        (types.DiskFormat.RAW, types.StorageType.NFS),
    ],
)
def test_a_disk_snapshot_is_downloaded_as_its_volume_file(
    lab: dict[str, Any], conn: sdk.Connection, fmt: types.DiskFormat, storage: types.StorageType
) -> None:
    """4.3's imageio served files: the client asks raw, gets the file (qcow2 bytes if cow)."""
    vm, disk = find_disk(conn, fmt, storage)
    volume_id = disk.image_id  # the snapshot's volume once the snapshot is taken
    with snapshot(conn, vm):
        request = types.ImageTransfer(
            snapshot=types.DiskSnapshot(id=volume_id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,  # ignored by a 4.3 engine
        )
        with image_transfer(conn, request) as transfer:
            assert transfer.format == fmt
            expected = volume_file(lab, disk, volume_id).read_bytes()
            served = read(lab, transfer.transfer_url)
            assert (served[:4] == QCOW2_MAGIC) == (fmt == types.DiskFormat.COW)
            assert served == expected
            assert read(lab, transfer.proxy_url, 4) == expected[:4]


def test_switching_to_4_5_at_runtime_brings_backups_back(
    lab: dict[str, Any], conn: sdk.Connection
) -> None:
    changed = set_engine_version(lab, "4.5")
    assert changed == engine_version(lab)
    assert changed["full_version"] == "4.5.5-1.el8" and changed["backup_api"] is True
    assert read_lab_json(Path(lab["state_dir"]))["engine"]["version"] == "4.5"
    system = conn.system_service()
    assert system.get().product_info.version.minor == 5
    assert system.clusters_service().list()[0].version.minor == 7

    vm, disk = find_disk(conn, types.DiskFormat.COW, types.StorageType.GLUSTERFS)
    qcow2 = volume_file(lab, disk, disk.image_id).read_bytes()[:4]
    with vm_backup(conn, vm, [disk]) as backup:
        request = types.ImageTransfer(
            disk=types.Disk(id=disk.id),
            backup=types.Backup(id=backup.id),
            direction=types.ImageTransferDirection.DOWNLOAD,
            format=types.DiskFormat.RAW,
        )
        with image_transfer(conn, request) as transfer:
            assert transfer.format == types.DiskFormat.RAW
            guest = read(lab, transfer.transfer_url, 64 * 1024)  # guest data, not qcow2
            assert len(guest) == 64 * 1024 and guest[:4] != QCOW2_MAGIC
    assert qcow2 == QCOW2_MAGIC
    backups = system.vms_service().vm_service(vm.id).backups_service().list()
    assert [b.id for b in backups] == [backup.id]

    set_engine_version(lab, "4.3")
    with pytest.raises(sdk.NotFoundError):
        system.vms_service().vm_service(vm.id).backups_service().list()
    assert read_lab_json(Path(lab["state_dir"]))["engine"]["full_version"] == "4.3.10.4-1.el7"


def test_the_version_control_refuses_what_it_cannot_present(lab: dict[str, Any]) -> None:
    with pytest.raises(DroverError, match=r"HTTP 400.*versions 4\.0 to 4\.5, not '3\.6'"):
        set_engine_version(lab, "3.6")
    with pytest.raises(DroverError, match=r"HTTP 400.*is not an engine version"):
        set_engine_version(lab, "latest")
    assert engine_version(lab)["version"] == "4.3"


def test_the_cli_shows_and_switches_the_version(lab: dict[str, Any]) -> None:
    runner = CliRunner()
    state_dir = lab["state_dir"]
    shown = runner.invoke(lab_group, ["engine-version", "--state-dir", state_dir])
    assert shown.exit_code == 0 and '"version": "4.3"' in shown.output
    switched = runner.invoke(lab_group, ["engine-version", "--state-dir", state_dir, "4.4"])
    assert switched.exit_code == 0, switched.output
    assert '"full_version": "4.4.10.7-1.el8"' in switched.output
    bad = runner.invoke(lab_group, ["up", "--state-dir", state_dir, "--engine-version", "5.0"])
    assert bad.exit_code == 2 and "4.0 to 4.5" in bad.output
