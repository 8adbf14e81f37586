"""Image transfer mode end to end: real Redis, lab, worker processes, repository, restore."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import ovirtsdk4.types as types
import pytest

from lab.leftovers import count_leftovers
from shared.jobs import GuestCommand
from shared.repository.repository import Repository
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import backup, restore, start_backup, wait_job
from tests.integration.engine_client import (
    connect,
    find_vm,
    image_transfer,
    lab_write,
    sha256,
    snapshot,
    vm_disks,
    wait_for,
)

MiB = 1 << 20
NO_LEFTOVERS = {"snapshots": 0, "image_transfers": 0, "disk_attachments": 0, "backups": 0}

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fleet")]


@pytest.fixture
def connection(lab: dict[str, Any]) -> Any:
    with connect(lab) as conn:
        yield conn


def disk_sha256(lab: dict[str, Any], connection: Any, disk_id: str, tmp_path: Path) -> str:
    """What the guest sees now, read as the SDK's download_disk_snapshot.py does (the engine
    refuses a plain download of a disk plugged into a running VM): a disk-only snapshot,
    its volume downloaded with its backing chain, the snapshot removed."""
    from ovirt_imageio import client as imageio

    system = connection.system_service()
    disk = system.disks_service().disk_service(disk_id).get()
    spec = types.ImageTransfer(
        snapshot=types.DiskSnapshot(id=disk.image_id),
        format=types.DiskFormat.RAW,
        direction=types.ImageTransferDirection.DOWNLOAD,
    )
    target = tmp_path / f"{disk_id}.raw"
    with snapshot(connection, owner_vm(connection, disk_id)), image_transfer(connection, spec) as t:
        imageio.download(t.transfer_url, str(target), lab["engine"]["ca_file"], fmt="raw")
    digest = sha256(target)
    target.unlink()
    return digest


def owner_vm(connection: Any, disk_id: str) -> Any:
    vms = connection.system_service().vms_service()
    for vm in vms.list():
        if any(
            a.disk.id == disk_id for a in vms.vm_service(vm.id).disk_attachments_service().list()
        ):
            return vm
    raise AssertionError(f"no VM has disk {disk_id}")


def restore_and_verify(
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    backup_id: str,
    name: str,
    expected: dict[str, str],
    *,
    mode: str = "image_transfer",
    kept_snapshots: int = 0,
    cluster: str = "",
) -> None:
    """Restore as a new VM, check every disk's read-back checksum, then remove the VM."""
    restored = restore(
        celery_app, store, manager, repo_dir, backup_id, name, mode=mode, cluster=cluster
    )
    context = store.context(restored.id)
    assert context and all(d["verified"] for d in context["disks"])
    assert {d["sha256"] for d in context["disks"]} == set(expected.values())
    no_leftovers(connection, kept_snapshots)
    new_vm = find_vm(connection, f"name={name}")
    assert len(vm_disks(connection, new_vm)) == len(expected)
    connection.system_service().vms_service().vm_service(new_vm.id).remove()


def no_leftovers(connection: Any, kept_snapshots: int = 0) -> dict[str, int]:
    """None, but for the snapshots kept for the next incremental (snapshot-chain modes)."""
    expected = NO_LEFTOVERS | {"snapshots": kept_snapshots}
    return wait_for(
        lambda: (c := count_leftovers(connection)) == expected and c,
        "no leftovers",
        timeout_s=30,
    )


def test_full_incremental_and_restore_bit_exact(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=db01")
    disks = vm_disks(connection, vm)
    ids = [d.id for d in disks]
    full = backup(celery_app, store, manager, vm, ids, repo_dir)
    assert full.kind == "full"
    before = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}

    lab_write(lab, vm.name, 0, offset=7 * MiB + 512, length=300 * 1024)
    lab_write(lab, vm.name, 1, offset=0, length=64 * 1024)
    incremental = backup(celery_app, store, manager, vm, ids, repo_dir)
    after = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    assert incremental.kind == "incremental"
    assert sum(d.bytes_read for d in incremental.disks) < sum(d.bytes_read for d in full.disks)

    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(full.id, disk_id) == before[disk_id]
        assert repo.image_sha256(incremental.id, disk_id) == after[disk_id]
    assert repo.manifest(incremental.id).parent_id == full.id
    checkpoints = connection.system_service().vms_service().vm_service(vm.id).checkpoints_service()
    assert [c.id for c in checkpoints.list()] == [repo.manifest(incremental.id).checkpoint_id]

    restore_and_verify(
        connection, celery_app, store, manager, repo_dir, incremental.id, "db01-restored", after
    )


def test_vm_without_guest_agent_is_backed_up_with_a_warning(
    connection: Any, celery_app: Any, store: StateStore, manager: str, repo_dir: Path
) -> None:
    vm = find_vm(connection, "name=app01")
    ids = [d.id for d in vm_disks(connection, vm)]
    job = backup(celery_app, store, manager, vm, ids, repo_dir, quiesce=True)
    assert job.status == JobStatus.SUCCEEDED_WITH_WARNINGS
    assert any("without quiescing: no guest agent" in w for w in job.warnings)
    no_leftovers(connection)


def test_pre_snapshot_command_failure_is_cleaned_up(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
) -> None:
    vm = find_vm(connection, "name=web01")
    ids = [d.id for d in vm_disks(connection, vm)]
    host = lab["hosts"][0]
    failing = guest_command(host, "echo cannot flush >&2; exit 3")
    job = wait_job(
        store, start_backup(celery_app, store, manager, vm, ids, repo_dir, pre_command=failing)
    )
    assert job.status == JobStatus.FAILED
    assert "pre-snapshot command exited with 3" in job.error
    assert Repository.open(str(repo_dir)).list_backups() == []
    no_leftovers(connection)
    assert store.vm_lock_holder(vm.id) == ""


def guest_command(host: dict[str, Any], command: str, host_key: str = "") -> GuestCommand:
    return GuestCommand(
        command=command,
        host=host["address"],
        host_key=host_key or host["ssh_host_key"],
        user=host["ssh_user"],
        port=host["ssh_port"],
        key_file=host["ssh_key"],
    )


def test_a_guest_with_another_host_key_is_refused(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
) -> None:
    vm = find_vm(connection, "name=web01")
    ids = [d.id for d in vm_disks(connection, vm)]
    host = lab["hosts"][0]
    impostor = guest_command(
        host, "touch /tmp/drover-must-not-run", lab["hosts"][-1]["ssh_host_key"]
    )
    if len(lab["hosts"]) == 1 or impostor.host_key == host["ssh_host_key"]:
        impostor = guest_command(host, "true", "SHA256:" + "A" * 43)
    job = wait_job(
        store, start_backup(celery_app, store, manager, vm, ids, repo_dir, pre_command=impostor)
    )
    assert job.status == JobStatus.FAILED
    assert f"the host key of {host['ssh_user']}@{host['address']}:{host['ssh_port']}" in job.error
    assert "has changed" in job.error
    assert Repository.open(str(repo_dir)).list_backups() == []
    no_leftovers(connection)


def test_broken_checkpoint_chain_falls_back_to_full(
    connection: Any, celery_app: Any, store: StateStore, manager: str, repo_dir: Path
) -> None:
    vm = find_vm(connection, "name=db01")  # its qcow2 disks have incremental backup enabled
    ids = [d.id for d in vm_disks(connection, vm)]
    assert backup(celery_app, store, manager, vm, ids, repo_dir).kind == "full"
    checkpoints = connection.system_service().vms_service().vm_service(vm.id).checkpoints_service()
    for checkpoint in checkpoints.list():
        checkpoints.checkpoint_service(checkpoint.id).remove()
    job = backup(celery_app, store, manager, vm, ids, repo_dir)
    assert job.kind == "full"
    assert any("checkpoint chain broken" in w for w in job.warnings)
    no_leftovers(connection)


def test_worker_killed_mid_transfer_still_completes_bit_exact(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    fleet: Any,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=web01")
    ids = [d.id for d in vm_disks(connection, vm)]
    lab_write(lab, vm.name, 0, offset=16 * MiB, length=160 * MiB)
    expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    job_id = start_backup(celery_app, store, manager, vm, ids, repo_dir)
    wait_for(
        lambda: stored_any_chunk(store, job_id),
        "first chunks stored",
        timeout_s=120,
    )
    killed = kill_pool_children(fleet.pid)
    assert killed
    job = wait_job(store, job_id)
    assert job.status in (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED_WITH_WARNINGS), job.error
    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(job.id, disk_id) == expected[disk_id]
    restore_and_verify(
        connection, celery_app, store, manager, repo_dir, job.id, "web01-restored", expected
    )


def stored_any_chunk(store: StateStore, job_id: str) -> bool:
    job = store.job(job_id)
    return job is not None and any(d.done_chunks for d in job.disks)


def kill_pool_children(worker_pid: int) -> list[int]:
    """SIGKILL the worker's pool processes (the ones running tasks), as the OOM killer would."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    for pid in map(int, children):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    return [int(p) for p in children]
