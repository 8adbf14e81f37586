"""`drover lab up` as an operator runs it: ready, then stopped with nothing left running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from lab.processes import lab_process
from tests.integration.engine_client import connect, find_disk, wait_for

pytestmark = pytest.mark.integration


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name `text` (whole, unlike ps)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_stopping_the_lab_leaves_no_process_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with lab_process(state, "--vms", "4", "--disk-size", "64MiB") as lab, connect(lab) as conn:
        assert lab["engine"]["url"].startswith("https://")
        assert {"name", "address", "ssh_port", "ssh_user", "ssh_key", "imageio_port"} <= set(
            lab["hosts"][0]
        )
        vm, disk = find_disk(conn, types.DiskFormat.COW, types.StorageType.NFS)
        # the VM is Up: read its disk through a disk-only snapshot, as download_disk_snapshot.py
        # does; the snapshot and the transfer are left in flight when the lab stops
        snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
        snap = snapshots.add(types.Snapshot(description="in flight", persist_memorystate=False))
        snap_service = snapshots.snapshot_service(snap.id)
        wait_for(lambda: snap_service.get().snapshot_status == types.SnapshotStatus.OK, "snapshot")
        transfers = conn.system_service().image_transfers_service()
        transfer = transfers.add(
            types.ImageTransfer(
                snapshot=types.DiskSnapshot(id=disk.image_id),
                direction=types.ImageTransferDirection.DOWNLOAD,
            )
        )
        service = transfers.image_transfer_service(transfer.id)
        wait_for(lambda: service.get().phase == types.ImageTransferPhase.TRANSFERRING, "transfer")
        running = processes_mentioning(str(tmp_path))
        assert any("qemu-nbd" in p for p in running)
        assert any("sshd" in p for p in running)
        assert any("ovirt_imageio" in p for p in running)
    assert processes_mentioning(str(tmp_path)) == []
    assert not (state / "lab.json").exists()


def drover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lab_write_without_a_lab_says_what_to_do(tmp_path: Path) -> None:
    result = drover(
        "lab",
        "write",
        "--state-dir",
        str(tmp_path),
        "--vm",
        "vm1",
        "--offset",
        "0",
        "--length",
        "4K",
    )
    assert result.returncode == 1
    assert "no lab is running" in result.stderr and "drover lab up" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_size_is_a_usage_error(tmp_path: Path) -> None:
    result = drover("lab", "up", "--state-dir", str(tmp_path), "--disk-size", "lots")
    assert result.returncode != 0
    assert "is not a size" in result.stderr
    assert "Traceback" not in result.stderr
