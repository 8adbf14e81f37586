"""ImageioSource / ImageioSink through real image transfers of the lab (real ovirt-imageio)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shared.engine import DiskInfo, EngineClient, TransferInfo, VmInfo
from shared.settings import EngineSettings
from shared.sources import Extent, ImageioSink, ImageioSource
from tests.integration.engine_client import lab_write, sha256

pytestmark = pytest.mark.integration
MiB = 1 << 20
CHUNK = 4 * MiB


@pytest.fixture(scope="module")
def client(lab: dict[str, Any]) -> Iterator[EngineClient]:
    with EngineClient.connect(EngineSettings(**lab["engine"])) as engine:
        yield engine


@pytest.fixture
def ca_file(lab: dict[str, Any]) -> str:
    return str(lab["engine"]["ca_file"])


def nfs_cow_disk(client: EngineClient) -> tuple[VmInfo, DiskInfo, int]:
    """A qcow2 disk with incremental backup on a file domain: (vm, disk, index in the VM)."""
    nfs = {sd.id for sd in client.storage_domains() if sd.type == "nfs"}
    for vm in client.find_vms(patterns=["*0*"]):
        for index, disk in enumerate(vm.disks):
            if (
                disk.format == "cow"
                and disk.backup == "incremental"
                and disk.storage_domain_id in nfs
            ):
                return vm, disk, index
    raise AssertionError("the lab has no incremental qcow2 disk on NFS")


def guest_view(lab: dict[str, Any], client: EngineClient, disk_id: str, out: Path) -> Path:
    """The disk as its guest sees it now (qemu-img convert of the active volume's chain)."""
    disk = client.disk(disk_id)
    root = Path(lab["hosts"][0]["mount_root"])
    (volume,) = root.glob(f"**/{disk.storage_domain_id}/images/{disk.id}/{disk.image_id}")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(volume), str(out)], check=True)
    return out


def read_all(source: ImageioSource, out: Path, threads: int = 4) -> Path:
    """Read the whole disk with `threads` readers, each reusing one buffer, into `out`."""
    size = source.size()
    with out.open("wb") as f:
        f.truncate(size)

    def copy(offsets: list[int]) -> None:
        buf = bytearray(CHUNK)
        with out.open("r+b") as f:
            for offset in offsets:
                n = source.readinto(offset, buf)
                f.seek(offset)
                f.write(memoryview(buf)[:n])

    offsets = list(range(0, size, CHUNK))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, [offsets[i::threads] for i in range(threads)]))
    return out


def apply(source: ImageioSource, extents: list[Extent], image: Path) -> None:
    with image.open("r+b") as f:
        for extent in extents:
            f.seek(extent.start)
            f.write(
                bytes(extent.length) if extent.zero else source.read(extent.start, extent.length)
            )


def test_full_backup_reads_what_the_guest_sees(
    lab: dict[str, Any], client: EngineClient, ca_file: str, tmp_path: Path
) -> None:
    vm, disk, _ = nfs_cow_disk(client)
    backup = client.start_backup(vm.id, [disk.id], None, timeout_s=30)
    try:
        expected = guest_view(lab, client, disk.id, tmp_path / "expected.raw")
        transfer = client.start_transfer(disk_id=disk.id, backup_id=backup.id, timeout_s=30)
        with ImageioSource(transfer, ca_file) as source:
            assert not source.via_proxy and source.connections == 4
            assert source.size() == disk.size
            extents = source.extents("zero")
            assert extents[0].start == 0 and extents[-1].end == disk.size
            assert all(e.dirty for e in extents) and any(e.zero for e in extents)
            image = read_all(source, tmp_path / "full.raw")
            assert source.read(disk.size - 10, 100) == expected.read_bytes()[-10:]
        client.finalize_transfer(transfer.id, timeout_s=30)
    finally:
        client.cleanup_vm(vm.id, [disk.id], timeout_s=30)
    assert sha256(image) == sha256(expected)


def test_as_many_callers_as_the_server_allows_do_not_stall(
    client: EngineClient, ca_file: str, tmp_path: Path
) -> None:
    vm, disk, _ = nfs_cow_disk(client)
    backup = client.start_backup(vm.id, [disk.id], None, timeout_s=30)
    try:
        transfer = client.start_transfer(disk_id=disk.id, backup_id=backup.id, timeout_s=30)
        with ImageioSource(transfer, ca_file, max_connections=64) as source:
            assert source.connections < 8  # the server's 8, less the metadata connection
            read_all(source, tmp_path / "many.raw", threads=16)
        client.finalize_transfer(transfer.id, timeout_s=30)
    finally:
        client.cleanup_vm(vm.id, [disk.id], timeout_s=30)


def test_incremental_reads_only_dirty_extents(
    lab: dict[str, Any], client: EngineClient, ca_file: str, tmp_path: Path
) -> None:
    vm, disk, index = nfs_cow_disk(client)
    full = client.start_backup(vm.id, [disk.id], None, timeout_s=30)
    transfer = client.start_transfer(disk_id=disk.id, backup_id=full.id, timeout_s=30)
    with ImageioSource(transfer, ca_file) as source:
        image = read_all(source, tmp_path / "image.raw")
    client.finalize_transfer(transfer.id, timeout_s=30)
    client.finalize_backup(vm.id, full.id, timeout_s=30)
    assert full.to_checkpoint_id

    offset, length = 7 * MiB + 4096, 200 * 1024
    lab_write(lab, vm.name, index, offset, length)
    incremental = client.start_backup(vm.id, [disk.id], full.to_checkpoint_id, timeout_s=30)
    try:
        assert incremental.from_checkpoint_id == full.to_checkpoint_id
        expected = guest_view(lab, client, disk.id, tmp_path / "expected.raw")
        transfer = client.start_transfer(disk_id=disk.id, backup_id=incremental.id, timeout_s=30)
        with ImageioSource(transfer, ca_file) as source:
            dirty = [e for e in source.extents("dirty") if e.dirty]
            apply(source, dirty, image)
        client.finalize_transfer(transfer.id, timeout_s=30)
    finally:
        client.cleanup_vm(vm.id, [disk.id], timeout_s=30)
    assert any(e.start <= offset and e.end >= offset + length for e in dirty)
    assert sum(e.length for e in dirty) <= length + 2 * 64 * 1024
    assert sha256(image) == sha256(expected)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_falls_back_to_the_engine_proxy(client: EngineClient, ca_file: str, tmp_path: Path) -> None:
    vm, disk, _ = nfs_cow_disk(client)
    backup = client.start_backup(vm.id, [disk.id], None, timeout_s=30)
    try:
        transfer = client.start_transfer(disk_id=disk.id, backup_id=backup.id, timeout_s=30)
        assert transfer.transfer_url and transfer.proxy_url
        with ImageioSource(transfer, ca_file) as direct:
            want = hashlib.sha256(direct.read(0, 2 * MiB)).hexdigest()
        ticket = transfer.transfer_url.rsplit("/", 1)[1]
        unreachable = replace(
            transfer, transfer_url=f"https://127.0.0.1:{closed_port()}/images/{ticket}"
        )
        with ImageioSource(unreachable, ca_file) as source:
            assert source.via_proxy and source.url == transfer.proxy_url
            assert hashlib.sha256(source.read(0, 2 * MiB)).hexdigest() == want
        client.finalize_transfer(transfer.id, timeout_s=30)
    finally:
        client.cleanup_vm(vm.id, [disk.id], timeout_s=30)


def test_upload_then_download(client: EngineClient, ca_file: str, tmp_path: Path) -> None:
    nfs = next(sd for sd in client.storage_domains() if sd.type == "nfs")
    size = 16 * MiB
    disk = client.add_disk("drover-upload-test", size, "cow", nfs.id)
    try:
        data = bytes(range(256)) * 4096  # 1 MiB
        upload = client.start_transfer(disk_id=disk.id, direction="upload", timeout_s=30)
        with ImageioSink(upload, ca_file) as sink:
            assert sink.size() == size

            def put(i: int) -> None:
                sink.write(i * 2 * MiB, data)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(put, range(8)))
            sink.zero(2 * MiB, MiB)  # undo the second write
            sink.flush()
        client.finalize_transfer(upload.id, timeout_s=30)
        assert client.disk(disk.id).status == "ok"

        download = client.start_transfer(disk_id=disk.id, timeout_s=30)
        with ImageioSource(download, ca_file) as source:
            copy = read_all(source, tmp_path / "copy.raw")
        client.finalize_transfer(download.id, timeout_s=30)
    finally:
        client.remove_disk(disk.id, timeout_s=30)
    expected = bytearray(size)
    for i in range(8):
        expected[i * 2 * MiB : i * 2 * MiB + MiB] = data
    expected[2 * MiB : 3 * MiB] = bytes(MiB)
    assert copy.read_bytes() == bytes(expected)


def test_transfer_info_needs_a_url(ca_file: str) -> None:
    from shared.sources import ImageioError

    nowhere = TransferInfo("t", "transferring", None, None, None)
    with pytest.raises(ImageioError, match="neither"):
        ImageioSource(nowhere, ca_file)
