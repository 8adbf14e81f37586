"""LabDataPlane with real qemu-img/qemu-nbd, ovirt-imageio daemons and sshd (no mocks)."""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest
from ovirt_imageio import client

from lab.dataplane import DomainKind, DomainSpec, HostSpec, VolumeFormat, VolumeRef
from lab.hosts.dataplane import LabDataPlane
from lab.pki import CertificateAuthority

MiB = 1024 * 1024
SIZE = 8 * MiB

HOSTS = [HostSpec("host1", "host-id-1", "cluster1"), HostSpec("host2", "host-id-2", "cluster1")]
DOMAINS = {
    DomainKind.FILE: DomainSpec("sd-file", "nfs-data", DomainKind.FILE),
    DomainKind.GLUSTER: DomainSpec("sd-gluster", "gluster-data", DomainKind.GLUSTER,
                                   server="gluster.lab.local", path="gv0"),
    DomainKind.BLOCK: DomainSpec("sd-block", "iscsi-data", DomainKind.BLOCK),
}


# helpers


def new_ref(kind: DomainKind = DomainKind.FILE, disk_id: str | None = None) -> VolumeRef:
    return VolumeRef(DOMAINS[kind].id, disk_id or str(uuid.uuid4()), str(uuid.uuid4()))


def seeded(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def guest_data(lab: LabDataPlane, top: VolumeRef, tmp_path: Path) -> bytes:
    """The guest-visible bytes of the chain ending at `top`."""
    out = tmp_path / f"guest-{uuid.uuid4().hex}.raw"
    fmt = "qcow2" if lab.storage.fmt(top) is VolumeFormat.COW else "raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw",
                    str(lab.volume_path(top)), str(out)], check=True)
    return out.read_bytes()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ticket_id() -> str:
    return str(uuid.uuid4())


def ssh_connect(lab: LabDataPlane, host: str) -> paramiko.SSHClient:
    ep = next(e for e in lab.host_endpoints() if e.name == host)
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    ssh.connect(ep.address, port=ep.ssh_port, username=ep.ssh_user, key_filename=ep.ssh_key,
                look_for_keys=False, allow_agent=False, timeout=10)
    return ssh


def ssh_run(ssh: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = ssh.exec_command(command, timeout=30)
    rc = stdout.channel.recv_exit_status()
    return rc, stdout.read().decode(), stderr.read().decode()


# fixtures


def make_lab(state_dir: Path) -> LabDataPlane:
    ca = CertificateAuthority.create(state_dir / "pki")
    lab = LabDataPlane(state_dir, HOSTS, ca)
    for domain in DOMAINS.values():
        lab.add_domain(domain)
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabDataPlane]:
    lab = make_lab(tmp_path_factory.mktemp("lab"))
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


# life cycle


def test_start_stop_leaves_no_processes(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    lab.start()
    pids = [p.pid for p in lab.registry.live()]
    names = sorted(p.name for p in lab.registry.live())
    assert names == ["imageio-engine-proxy", "imageio-host1", "imageio-host2",
                     "sshd-host1", "sshd-host2"]
    assert all(alive(pid) for pid in pids)
    ref = new_ref()
    lab.create_volume(ref, VolumeFormat.RAW, SIZE)
    export = lab.export(ref, backing_chain=True, writable=False)
    pids += [p.pid for p in lab.registry.live() if p.name == "qemu-nbd"]
    assert len(pids) == 6
    lab.stop()
    lab.stop()  # idempotent
    assert not lab.registry.live()
    assert not any(alive(pid) for pid in pids)
    export.close()  # closing after stop is harmless


def test_endpoints(lab: LabDataPlane) -> None:
    endpoints = lab.host_endpoints()
    assert [e.name for e in endpoints] == ["host1", "host2"]
    for ep in endpoints:
        assert ep.address == "127.0.0.1"
        assert Path(ep.ssh_key).exists()
        assert ep.mount_root.endswith(f"hosts/{ep.name}/rhev/data-center/mnt")
    assert lab.proxy_imageio_url().startswith("https://127.0.0.1:")


# volumes and layout


@pytest.mark.parametrize("kind", list(DomainKind))
def test_create_volumes_layout(lab: LabDataPlane, kind: DomainKind) -> None:
    base = new_ref(kind)
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.RAW, SIZE)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)

    base_info, top_info = lab.volume_info(base), lab.volume_info(top)
    assert base_info["format"] == "raw"
    assert top_info["format"] == "qcow2"
    assert top_info["virtual-size"] == SIZE
    expected_backing = base.volume_id if kind is not DomainKind.BLOCK else (
        f"../{base.disk_id}/{base.volume_id}")
    assert top_info["backing-filename"] == expected_backing
    assert top_info["backing-filename-format"] == "raw"

    meta = lab.storage.layout.meta_path(DOMAINS[kind], top).read_text()
    assert f"PUUID={base.volume_id}\n" in meta
    assert "FORMAT=COW\n" in meta and "VOLTYPE=LEAF\n" in meta and meta.endswith("EOF\n")
    base_meta = lab.storage.layout.meta_path(DOMAINS[kind], base).read_text()
    assert "VOLTYPE=INTERNAL\n" in base_meta
    assert "PUUID=00000000-0000-0000-0000-000000000000\n" in base_meta

    host_path = lab.host_volume_path("host2", top)
    mount_root = Path(lab.host_endpoints()[1].mount_root)
    assert host_path.is_relative_to(mount_root)
    relative = host_path.relative_to(mount_root).as_posix()
    if kind is DomainKind.FILE:
        assert relative.startswith("nfs.lab.local:_exports_data/sd-file/images/")
        assert host_path.exists()
    elif kind is DomainKind.GLUSTER:
        assert relative.startswith("glusterSD/gluster.lab.local:_gv0/sd-gluster/images/")
        assert host_path.exists()
    else:
        assert relative.startswith("blockSD/sd-block/images/")
        assert host_path.is_symlink() and not host_path.exists()  # LV not active


def test_raw_volume_cannot_have_bitmap(lab: LabDataPlane) -> None:
    ref = new_ref()
    lab.create_volume(ref, VolumeFormat.RAW, SIZE)
    with pytest.raises(ValueError):
        lab.add_bitmap(ref, "cp")


# exports and imageio


@pytest.mark.parametrize("kind", list(DomainKind))
def test_download_direct_and_via_proxy(lab: LabDataPlane, kind: DomainKind,
                                       tmp_path: Path) -> None:
    ref = new_ref(kind)
    lab.create_volume(ref, VolumeFormat.COW, SIZE)
    lab.fill_volume(ref, MiB, 2 * MiB, seed=7)
    expected = bytes(MiB) + seeded(7, 2 * MiB) + bytes(SIZE - 3 * MiB)
    tid = ticket_id()
    with lab.export(ref, backing_chain=True, writable=False) as export:
        assert export.nbd_url.startswith("nbd:unix:/")
        assert export.size == SIZE
        url = lab.add_ticket("host1", tid, export.nbd_url, SIZE, ["read"], 300)
        client.download(url, str(tmp_path / "direct.raw"), str(lab.ca_file), fmt="raw")
        proxy_url = lab.add_proxy_ticket(tid, url, SIZE, ["read"], 300)
        assert proxy_url.startswith(lab.proxy_imageio_url())
        client.download(proxy_url, str(tmp_path / "proxy.raw"), str(lab.ca_file), fmt="raw")
        status = lab.ticket_status("host1", tid)
        assert status["uuid"] == tid
        assert int(str(status["transferred"])) >= 2 * MiB
        lab.remove_proxy_ticket(tid)
        lab.remove_ticket("host1", tid)
    assert (tmp_path / "direct.raw").read_bytes() == expected
    assert (tmp_path / "proxy.raw").read_bytes() == expected


def test_upload_through_writable_export(lab: LabDataPlane, tmp_path: Path) -> None:
    ref = new_ref(DomainKind.BLOCK)
    lab.create_volume(ref, VolumeFormat.RAW, SIZE)
    data = os.urandom(SIZE // 2) + bytes(SIZE // 2)
    src = tmp_path / "src.raw"
    src.write_bytes(data)
    tid = ticket_id()
    with lab.export(ref, backing_chain=True, writable=True) as export:
        url = lab.add_ticket("host2", tid, export.nbd_url, SIZE, ["read", "write"], 300)
        proxy_url = lab.add_proxy_ticket(tid, url, SIZE, ["read", "write"], 300)
        client.upload(str(src), proxy_url, str(lab.ca_file))
        lab.remove_proxy_ticket(tid)
        lab.remove_ticket("host2", tid)
    assert lab.volume_path(ref).read_bytes() == data


def test_layer_and_cow_format_exports(lab: LabDataPlane, tmp_path: Path) -> None:
    base = new_ref()
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.COW, SIZE)
    lab.fill_volume(base, 0, MiB, seed=1)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    lab.fill_volume(top, 2 * MiB, MiB, seed=2)

    tid = ticket_id()
    with lab.export(top, backing_chain=False, writable=False) as export:
        url = lab.add_ticket("host1", tid, export.nbd_url, SIZE, ["read"], 300)
        client.download(url, str(tmp_path / "layer.raw"), str(lab.ca_file), fmt="raw")
        lab.remove_ticket("host1", tid)
    layer = (tmp_path / "layer.raw").read_bytes()
    assert layer == bytes(2 * MiB) + seeded(2, MiB) + bytes(SIZE - 3 * MiB)

    qcow2_bytes = lab.volume_path(top).read_bytes()
    with lab.export(top, backing_chain=False, writable=False, fmt=VolumeFormat.COW) as export:
        assert export.size == len(qcow2_bytes)
        url = lab.add_ticket("host1", tid, export.nbd_url, export.size, ["read"], 300)
        with client.ImageioClient(url, cafile=str(lab.ca_file)) as io:
            buf = bytearray(io.size())
            io.read(0, buf)
        lab.remove_ticket("host1", tid)
    assert bytes(buf) == qcow2_bytes


# checkpoints


def dirty_ranges(url: str, cafile: Path) -> list[tuple[int, int]]:
    with client.ImageioClient(url, cafile=str(cafile)) as io:
        return [(e.start, e.start + e.length) for e in io.extents("dirty") if e.dirty]


def covers(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in ranges)


def test_dirty_bitmap_over_snapshot_chain(lab: LabDataPlane) -> None:
    base = new_ref()
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.COW, SIZE)
    lab.fill_volume(base, 0, SIZE, seed=3)  # before the checkpoint: not dirty
    lab.add_bitmap(base, "cp1")
    assert lab.has_bitmap([base], "cp1")
    lab.guest_write(base, MiB, 64 * 1024)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)  # snapshot
    assert lab.has_bitmap([base, top], "cp1")
    assert lab.has_bitmap([top, base], "cp1")  # order agnostic
    lab.guest_write(top, 5 * MiB, 128 * 1024)

    tid = ticket_id()
    with lab.export(top, backing_chain=True, writable=False, dirty_bitmap="cp1") as export:
        url = lab.add_ticket("host1", tid, export.nbd_url, SIZE, ["read"], 300, dirty=True)
        proxy_url = lab.add_proxy_ticket(tid, url, SIZE, ["read"], 300)  # dirty like url
        for ranges in (dirty_ranges(url, lab.ca_file), dirty_ranges(proxy_url, lab.ca_file)):
            assert covers(ranges, MiB, MiB + 64 * 1024)
            assert covers(ranges, 5 * MiB, 5 * MiB + 128 * 1024)
            assert sum(e - s for s, e in ranges) <= 512 * 1024
        lab.remove_proxy_ticket(tid)
        lab.remove_ticket("host1", tid)
    # the temporary export bitmap is gone, the checkpoint stays
    assert lab.storage.bitmaps(top) == ["cp1"]

    lab.remove_bitmap([base, top], "cp1")
    assert not lab.has_bitmap([base, top], "cp1")
    assert lab.storage.bitmaps(base) == []


# guest writes


def test_hold_defers_guest_writes(lab: LabDataPlane, tmp_path: Path) -> None:
    ref = new_ref()
    lab.create_volume(ref, VolumeFormat.COW, SIZE)
    lab.hold(ref.disk_id)
    lab.hold(ref.disk_id)
    lab.guest_write(ref, 0, MiB)
    lab.guest_write(ref, 0, 1024)  # applied in order after the first
    assert guest_data(lab, ref, tmp_path) == bytes(SIZE)
    lab.release(ref.disk_id)
    assert guest_data(lab, ref, tmp_path) == bytes(SIZE)
    lab.release(ref.disk_id)
    data = guest_data(lab, ref, tmp_path)
    assert data[:MiB] != bytes(MiB) and data[MiB:] == bytes(SIZE - MiB)
    with pytest.raises(ValueError):
        lab.release(ref.disk_id)


def test_writes_during_snapshot_land_in_new_top(lab: LabDataPlane, tmp_path: Path) -> None:
    base = new_ref()
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.RAW, SIZE)
    lab.hold(base.disk_id)
    lab.guest_write(base, 0, MiB)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    lab.release(base.disk_id)
    assert lab.volume_path(base).read_bytes() == bytes(SIZE)
    assert guest_data(lab, top, tmp_path)[:MiB] != bytes(MiB)


def test_export_holds_the_disk(lab: LabDataPlane, tmp_path: Path) -> None:
    ref = new_ref()
    lab.create_volume(ref, VolumeFormat.COW, SIZE)
    with lab.export(ref, backing_chain=True, writable=False):
        lab.guest_write(ref, 0, MiB)
        assert lab.guest.pending(ref.disk_id) == 1
    assert lab.guest.pending(ref.disk_id) == 0
    assert guest_data(lab, ref, tmp_path)[:MiB] != bytes(MiB)


# chain operations


@pytest.mark.parametrize("kind", [DomainKind.FILE, DomainKind.BLOCK])
def test_merge_into_parent_keeps_data(lab: LabDataPlane, kind: DomainKind,
                                      tmp_path: Path) -> None:
    base = new_ref(kind)
    mid = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.COW, SIZE)
    lab.fill_volume(base, 0, 2 * MiB, seed=10)
    lab.add_bitmap(base, "cp")
    lab.create_volume(mid, VolumeFormat.COW, SIZE, parent=base)
    lab.fill_volume(mid, MiB, 2 * MiB, seed=11)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=mid)
    lab.fill_volume(top, 6 * MiB, MiB, seed=12)
    before_top, before_mid = guest_data(lab, top, tmp_path), guest_data(lab, mid, tmp_path)

    lab.merge_into_parent(mid, base)

    assert not lab.volume_path(mid).exists()
    assert lab.chain(top) == [top, base]
    assert guest_data(lab, top, tmp_path) == before_top
    assert guest_data(lab, base, tmp_path) == before_mid
    assert lab.storage.bitmaps(base) == ["cp"]
    assert lab.has_bitmap([base, top], "cp")

    lab.merge_into_parent(top, base)
    assert lab.chain(base) == [base]
    assert guest_data(lab, base, tmp_path) == before_top
    assert "VOLTYPE=LEAF" in lab.storage.layout.meta_path(DOMAINS[kind], base).read_text()


def test_copy_disk_collapses_chain(lab: LabDataPlane, tmp_path: Path) -> None:
    base = new_ref()
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.RAW, SIZE)
    lab.fill_volume(base, 0, MiB, seed=20)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    lab.fill_volume(top, 512 * 1024, MiB, seed=21)
    dst = new_ref(DomainKind.BLOCK)
    lab.copy_disk(top, dst, VolumeFormat.COW)
    info = lab.volume_info(dst)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert guest_data(lab, dst, tmp_path) == guest_data(lab, top, tmp_path)


# hosts over ssh


def test_ssh_file_volume(lab: LabDataPlane) -> None:
    ref = new_ref(DomainKind.GLUSTER)
    lab.create_volume(ref, VolumeFormat.COW, SIZE)
    with ssh_connect(lab, "host1") as ssh:
        rc, out, err = ssh_run(ssh, f"qemu-img info {lab.host_volume_path('host1', ref)}")
    assert rc == 0, err
    assert "file format: qcow2" in out


def test_ssh_block_volume_needs_lvchange(lab: LabDataPlane) -> None:
    base = new_ref(DomainKind.BLOCK)
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.RAW, SIZE)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    path = lab.host_volume_path("host2", top)
    info = f"qemu-img info --backing-chain {path}"
    vg = base.sd_id
    with ssh_connect(lab, "host2") as ssh:
        rc, _, err = ssh_run(ssh, info)
        assert rc != 0 and "No such file" in err
        rc, _, err = ssh_run(ssh, f"lvchange -ay {vg}/{base.volume_id} "
                                  f"&& lvchange --activate y {vg}/{top.volume_id}")
        assert rc == 0, err
        rc, out, err = ssh_run(ssh, info)
        assert rc == 0, err
        assert f"backing file: ../{base.disk_id}/{base.volume_id}" in out
        rc, out, _ = ssh_run(ssh, "lvs")
        assert rc == 0 and top.volume_id in out
        rc, _, err = ssh_run(ssh, f"lvchange -an {vg}/{top.volume_id}")
        assert rc == 0, err
        rc, _, _ = ssh_run(ssh, info)
        assert rc != 0
    # activation is per host
    assert not lab.host_volume_path("host1", base).exists()


# proxy VMs


def test_attach_device_shows_chain_data(lab: LabDataPlane, tmp_path: Path) -> None:
    base = new_ref(DomainKind.BLOCK)
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.RAW, SIZE)
    lab.fill_volume(base, 0, 2 * MiB, seed=30)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    lab.fill_volume(top, MiB, MiB, seed=31)

    snapshot_name = f"scsi-0QEMU_QEMU_HARDDISK_{base.disk_id}"
    device = Path(lab.attach_device("proxy-vm", top, snapshot_name))
    assert device == lab.proxy_root("proxy-vm") / "dev/disk/by-id" / snapshot_name
    assert device.read_bytes() == guest_data(lab, top, tmp_path)

    raw_name = f"virtio-{base.disk_id[:20]}"
    raw_device = Path(lab.attach_device("proxy-vm", base, raw_name))
    assert raw_device.read_bytes() == lab.volume_path(base).read_bytes()

    lab.detach_device("proxy-vm", snapshot_name)
    lab.detach_device("proxy-vm", raw_name)
    assert not device.exists() and not raw_device.exists()
    assert lab.volume_path(base).exists()
    assert not list((lab.proxy_root("proxy-vm") / "images").iterdir())


# thread safety


def test_concurrent_transfers_and_writes(lab: LabDataPlane, tmp_path: Path) -> None:
    kinds = [DomainKind.FILE, DomainKind.GLUSTER, DomainKind.BLOCK, DomainKind.FILE]

    def transfer(index: int) -> bool:
        ref = new_ref(kinds[index])
        lab.create_volume(ref, VolumeFormat.COW, SIZE)
        lab.fill_volume(ref, 0, MiB, seed=100 + index)
        lab.guest_write(ref, 4 * MiB, 4096)
        expected = guest_data(lab, ref, tmp_path)
        tid = ticket_id()
        host = HOSTS[index % 2].name
        with lab.export(ref, backing_chain=True, writable=False) as export:
            lab.guest_write(ref, 0, MiB)  # deferred: the export holds the disk
            url = lab.add_ticket(host, tid, export.nbd_url, SIZE, ["read"], 300)
            proxy_url = lab.add_proxy_ticket(tid, url, SIZE, ["read"], 300)
            dst = tmp_path / f"{index}.raw"
            client.download(proxy_url, str(dst), str(lab.ca_file), fmt="raw")
            lab.remove_proxy_ticket(tid)
            lab.remove_ticket(host, tid)
        return dst.read_bytes() == expected and guest_data(lab, ref, tmp_path) != expected

    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        assert all(pool.map(transfer, range(len(kinds))))


@pytest.mark.parametrize("base_first", [False, True])
def test_remove_volumes_in_any_order(lab: LabDataPlane, base_first: bool) -> None:
    base = new_ref(DomainKind.BLOCK)
    top = VolumeRef(base.sd_id, base.disk_id, str(uuid.uuid4()))
    lab.create_volume(base, VolumeFormat.COW, SIZE)
    lab.create_volume(top, VolumeFormat.COW, SIZE, parent=base)
    for ref in ([base, top] if base_first else [top, base]):
        lab.remove_volume(ref)
    assert not lab.volume_path(base).parent.exists()
    assert not lab.host_volume_path("host1", top).is_symlink()
