"""Pieces of the lab data plane that need no daemons: layout, metadata, fake lvm tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.dataplane import DomainKind, DomainSpec, VolumeFormat, VolumeRef
from lab.hosts import lvm
from lab.hosts.layout import NULL_UUID, Layout, mount_dir_name
from lab.hosts.meta import VolumeMeta


def test_mount_dir_name() -> None:
    assert mount_dir_name("nfs.lab", "/exports/data") == "nfs.lab:_exports_data"


def test_host_domain_dirs(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    root = layout.mount_root("h1")
    nfs = DomainSpec("sd1", "n", DomainKind.FILE, "nfs.lab", "/exports/data")
    gluster = DomainSpec("sd2", "g", DomainKind.GLUSTER, "gl.lab", "gv0")
    block = DomainSpec("sd3", "b", DomainKind.BLOCK)
    assert layout.host_domain_dir("h1", nfs) == root / "nfs.lab:_exports_data" / "sd1"
    assert layout.host_domain_dir("h1", gluster) == root / "glusterSD" / "gl.lab:_gv0" / "sd2"
    assert layout.host_domain_dir("h1", block) == root / "blockSD" / "sd3"
    ref = VolumeRef("sd3", "disk", "vol")
    assert layout.meta_path(block, ref) == tmp_path / "storage/sd3/meta/vol.meta"
    assert layout.volume_path(block, ref) == tmp_path / "storage/sd3/lv/images/disk/vol"


def test_meta_roundtrip() -> None:
    meta = VolumeMeta("sd", "img", VolumeFormat.COW, 1024, parent="p", voltype="INTERNAL")
    text = meta.dumps()
    assert text.endswith("EOF\n")
    for line in ("FORMAT=COW", "PUUID=p", "CAP=1024", "VOLTYPE=INTERNAL", "DISKTYPE=DATA",
                 "IMAGE=img", "DOMAIN=sd"):
        assert line + "\n" in text
    loaded = VolumeMeta.loads(text)
    assert (loaded.fmt, loaded.parent, loaded.capacity) == (VolumeFormat.COW, "p", 1024)
    assert not VolumeMeta("sd", "img", VolumeFormat.RAW, 1).has_parent
    assert VolumeMeta("sd", "img", VolumeFormat.RAW, 1).parent == NULL_UUID


def test_lvchange_and_lvs(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    bin_dir = lvm.install_tools(layout, "h1")
    hidden = layout.lv_dir("vg") / "images" / "disk" / "lv1"
    hidden.parent.mkdir(parents=True)
    hidden.write_bytes(b"x" * 512)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True,
                              text=True, check=False)

    device = layout.lv_device("h1", "vg", "lv1")
    assert run("lvchange", "-ay", "vg/lv1").returncode == 0
    assert device.resolve() == hidden and lvm.is_active(layout, "h1", "vg", "lv1")
    assert "-wi-a-----" in run("lvs").stdout
    assert run("lvchange", "--activate", "n", "vg/lv1").returncode == 0
    assert not device.exists()
    assert run("lvchange", "--activate=y", "vg/lv1").returncode == 0
    assert run("lvchange", "-an", "vg/lv1").returncode == 0
    assert not device.is_symlink()
    missing = run("lvchange", "-ay", "vg/nope")
    assert missing.returncode != 0 and "Failed to find" in missing.stderr
    assert run("lvchange", "vg/lv1").returncode != 0
