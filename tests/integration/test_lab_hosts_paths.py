"""Where a lab host keeps things (lab.json `mount_root` and `dev_root`) and its `lvs`, which
answers the query forms a backup tool uses as real LVM does."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ovirtsdk4.types as types
import paramiko
import pytest

from lab.dataplane import HostSpec
from lab.hosts import lvm
from lab.hosts.dataplane import LabDataPlane
from lab.hosts.layout import Layout
from lab.pki import CertificateAuthority
from lab.processes import lab_process
from tests.integration.engine_client import connect, find_disk

pytestmark = pytest.mark.integration
MiB = 1 << 20
VG, OTHER_VG = "5d1c9a3e-0b7f-4c1e-9d2a-6f8e7b3a1c40", "0f3b6d2a-7c41-4e8b-a9d5-2c6e8f1b3d57"
LV1, LV2, LV3 = "lv-base", "lv-top", "lv-other"


# lvs without servers -------------------------------------------------------------------
@pytest.fixture
def host(tmp_path: Path) -> tuple[Layout, Path]:
    """A host's bin directory over a storage with two block domains (VGs) and three LVs."""
    layout = Layout(tmp_path)
    bin_dir = lvm.install_tools(layout, "h1")
    for vg, disk, lv, size in (
        (VG, "disk1", LV1, 256 * MiB),
        (VG, "disk1", LV2, 512),
        (OTHER_VG, "disk2", LV3, 3 << 30),
    ):
        path = layout.lv_dir(vg) / "images" / disk / lv
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(size)
    layout.block_meta_dir(VG).mkdir(parents=True)
    (layout.block_meta_dir(VG) / f"{LV2}.meta").write_text(f"FORMAT=COW\nPUUID={LV1}\nEOF\n")
    return layout, bin_dir


def run(bin_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, check=False, cwd=cwd
    )


def test_lvs_without_arguments_lists_every_lv(host: tuple[Layout, Path]) -> None:
    _, bin_dir = host
    assert run(bin_dir, "lvchange", "-ay", f"{VG}/{LV1}").returncode == 0
    result = run(bin_dir, "lvs")
    assert result.returncode == 0 and result.stderr == ""
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["LV", "VG", "Attr", "LSize"]
    rows = [line.split() for line in lines]
    assert rows == [
        [LV3, OTHER_VG, "-wi-------", "3.00g"],
        [LV1, VG, "-wi-a-----", "256.00m"],
        [LV2, VG, "-wi-------", "512B"],
    ]


def test_lvs_reports_the_named_lv_only(host: tuple[Layout, Path]) -> None:
    _, bin_dir = host
    inactive = run(bin_dir, "lvs", "--noheadings", "-o", "lv_attr", f"{VG}/{LV1}")
    assert (inactive.returncode, inactive.stdout) == (0, "  -wi-------\n")
    run(bin_dir, "lvchange", "-ay", f"{VG}/{LV1}")
    active = run(bin_dir, "lvs", "--noheadings", "-o", "lv_attr", f"{VG}/{LV1}")
    assert active.stdout.strip() == "-wi-a-----"
    both = run(bin_dir, "lvs", "--noheadings", "-o", "lv_name,lv_attr", f"{VG}/{LV2}")
    assert both.stdout.split() == [LV2, "-wi-------"]


def test_lvs_separator_units_and_suffix(host: tuple[Layout, Path]) -> None:
    _, bin_dir = host
    result = run(
        bin_dir,
        "lvs",
        "--noheadings",
        "--separator",
        "|",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "vg_name,lv_name,lv_size",
        VG,
    )
    assert result.stdout.splitlines() == [f"  {VG}|{LV1}|{256 * MiB}", f"  {VG}|{LV2}|512"]
    with_suffix = run(bin_dir, "lvs", "--noheadings", "--units", "b", "-o", "size", f"{VG}/{LV1}")
    assert with_suffix.stdout.strip() == f"{256 * MiB}B"
    mebibytes = run(bin_dir, "lvs", "--noheadings", "--units=m", "-olv_size", f"{VG}/{LV1}")
    assert mebibytes.stdout.strip() == "256.00m"
    headed = run(bin_dir, "lvs", "--separator", ":", "-o", "name,attr", f"{VG}/{LV1}")
    assert headed.stdout.splitlines() == ["  LV:Attr", f"  {LV1}:-wi-------"]


def test_lvs_tags_paths_appended_fields_and_json(host: tuple[Layout, Path]) -> None:
    layout, bin_dir = host
    result = run(bin_dir, "lvs", "--noheadings", "-o", "+lv_tags,lv_path", f"{VG}/{LV2}")
    assert result.stdout.split() == [
        LV2,
        VG,
        "-wi-------",
        "512B",
        f"IU_disk1,PU_{LV1}",
        str(layout.lv_device("h1", VG, LV2)),
    ]
    report = run(
        bin_dir, "lvs", "--reportformat", "json", "-o", "lv_name,lv_active", f"/dev/{VG}/{LV1}"
    )
    assert json.loads(report.stdout) == {"report": [{"lv": [{"lv_name": LV1, "lv_active": ""}]}]}


def test_lvs_unknown_names_fail_as_lvm_does(host: tuple[Layout, Path]) -> None:
    _, bin_dir = host
    missing = run(bin_dir, "lvs", "--noheadings", "-o", "lv_attr", f"{VG}/nope")
    assert missing.returncode == 5 and missing.stdout == ""
    assert missing.stderr == f'  Failed to find logical volume "{VG}/nope"\n'
    partly = run(bin_dir, "lvs", "--noheadings", "-o", "lv_name", f"{VG}/{LV1}", "novg/lv")
    assert partly.returncode == 5 and partly.stdout.split() == [LV1]  # what is found is shown
    assert '  Volume group "novg" not found' in partly.stderr
    field = run(bin_dir, "lvs", "-o", "lv_colour")
    assert field.returncode == 5 and "Unrecognised field: lv_colour" in field.stderr
    assert run(bin_dir, "lvs", "--no-such-option").returncode == 3
    activate = run(bin_dir, "lvchange", "-ay", f"{VG}/nope")
    assert activate.returncode == 5 and f'"{VG}/nope"' in activate.stderr


def test_tools_of_a_relative_state_dir_work_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ca = CertificateAuthority.create(tmp_path / "pki")
    dataplane = LabDataPlane(Path("state"), [HostSpec("host1", "host-id-1", "cluster1")], ca)
    try:
        assert dataplane.state_dir == tmp_path / "state"
        bin_dir = lvm.install_tools(dataplane.layout, "host1")
        hidden = dataplane.layout.lv_dir(VG) / "images" / "disk" / LV1
        hidden.parent.mkdir(parents=True)
        hidden.write_bytes(b"\0" * 512)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        assert run(bin_dir, "lvchange", "-ay", f"{VG}/{LV1}", cwd=elsewhere).returncode == 0
        assert dataplane.layout.lv_device("host1", VG, LV1).resolve() == hidden
        listed = run(bin_dir, "lvs", "--noheadings", "-o", "lv_name", cwd=elsewhere)
        assert listed.stdout.split() == [LV1]
    finally:
        dataplane.stop()


# lab.json of a running lab -------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("paths") / "state"
    with lab_process(state, "--clusters", "1", "--vms", "2", "--disk-size", "8MiB") as document:
        yield document


def ssh_run(host: dict[str, Any], command: str) -> tuple[int, str, str]:
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    ssh.connect(
        host["address"],
        port=host["ssh_port"],
        username=host["ssh_user"],
        key_filename=host["ssh_key"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, stderr = ssh.exec_command(command, timeout=30)
        rc = stdout.channel.recv_exit_status()
        return rc, stdout.read().decode(), stderr.read().decode()
    finally:
        ssh.close()


def test_lab_json_hosts_have_absolute_mount_and_dev_roots(lab: dict[str, Any]) -> None:
    state_dir = Path(lab["state_dir"])
    for host in lab["hosts"]:
        mount_root, dev_root = Path(host["mount_root"]), Path(host["dev_root"])
        assert mount_root.is_absolute() and mount_root.is_dir()
        assert dev_root.is_absolute() and dev_root.is_dir()
        assert mount_root == state_dir / "hosts" / host["name"] / "rhev" / "data-center" / "mnt"
        assert dev_root == state_dir / "hosts" / host["name"] / "dev"


def test_an_activated_lv_appears_under_dev_root(lab: dict[str, Any]) -> None:
    with connect(lab) as conn:
        _, disk = find_disk(conn, types.DiskFormat.COW, types.StorageType.ISCSI)
    host = lab["hosts"][0]
    vg, lv = disk.storage_domains[0].id, disk.image_id
    device = Path(host["dev_root"]) / vg / lv
    seen_by_vdsm = Path(host["mount_root"]) / "blockSD" / vg / "images" / disk.id / lv
    query = f"lvs --noheadings -o lv_attr {vg}/{lv}"
    assert ssh_run(host, query) == (0, "  -wi-------\n", "")
    assert not device.exists() and not seen_by_vdsm.exists()

    assert ssh_run(host, f"lvchange -ay {vg}/{lv}")[0] == 0
    try:
        assert device.is_symlink() and seen_by_vdsm.exists()
        with device.open("rb") as f:
            assert f.read(4) == b"QFI\xfb"  # the qcow2 volume's bytes
        assert ssh_run(host, query) == (0, "  -wi-a-----\n", "")
        rc, out, _ = ssh_run(
            host, f"lvs --noheadings --units b --nosuffix -o lv_path,lv_size {vg}/{lv}"
        )
        assert rc == 0 and out.split() == [str(device), str(device.stat().st_size)]
    finally:
        ssh_run(host, f"lvchange -an {vg}/{lv}")
    assert not device.exists()
    rc, out, err = ssh_run(host, f"lvs --noheadings -o lv_attr {vg}/no-such-lv")
    assert (rc, out, err) == (5, "", f'  Failed to find logical volume "{vg}/no-such-lv"\n')
