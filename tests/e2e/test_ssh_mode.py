"""SSH transfer mode end to end: the lab's real sshd, Redis, worker processes, repository.

Snapshots through the API, volume chains read over SSH (file, GlusterFS and block domains,
with and without netcat), incrementals from the kept snapshot, restores written over SSH and
verified, LVs left as they were found, nothing left on the engine.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ovirtsdk4.types as types
import pytest

from bench.fleet import lab_host_access, register_lab_hosts
from shared.engine.snapshots import DESCRIPTION_PREFIX
from shared.repository.repository import Repository
from shared.ssh.credentials import remove_host, save_host
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import backup, start_backup, wait_job
from tests.e2e.test_image_transfer_mode import (
    NO_LEFTOVERS,
    disk_sha256,
    no_leftovers,
    restore_and_verify,
)
from tests.integration.engine_client import (
    connect,
    find_vm,
    lab_write,
    snapshot,
    vm_disks,
    wait_for,
)

MiB = 1 << 20
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fleet", "ssh_hosts")]


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[Any]:
    with connect(lab) as conn:
        yield conn
        remove_kept_snapshots(conn)


def remove_kept_snapshots(connection: Any) -> None:
    """Kept snapshots are the point of an incremental chain, not leftovers; other tests
    count every snapshot, so each test here ends without them."""
    vms = connection.system_service().vms_service()

    def removed() -> bool:
        left = 0
        for vm in vms.list():
            snapshots = vms.vm_service(vm.id).snapshots_service()
            for snap in snapshots.list():
                if (snap.description or "").startswith(DESCRIPTION_PREFIX):
                    left += 1
                    if snap.snapshot_status == types.SnapshotStatus.OK:
                        snapshots.snapshot_service(snap.id).remove()
        return left == 0

    wait_for(removed, "kept snapshots removed", timeout_s=60)
    no_leftovers(connection)


@pytest.fixture(scope="module")
def ssh_hosts(lab: dict[str, Any], redis_url: str, manager: str) -> Iterator[None]:
    store = StateStore.from_url(redis_url)
    register_lab_hosts(store, lab)
    yield
    for host in lab["hosts"]:
        remove_host(store, manager, host["name"])


def drover_snapshots(connection: Any, vm: Any) -> list[str]:
    service = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    return [s.id for s in service.list() if (s.description or "").startswith(DESCRIPTION_PREFIX)]


def active_lvs(lab: dict[str, Any]) -> set[str]:
    """Every LV device node on every lab host: an LV is active on a host while it has one."""
    found = set()
    for host in lab["hosts"]:
        root = Path(host["dev_root"])
        found |= {f"{host['name']}:{p.parent.name}/{p.name}" for p in root.glob("*/*")}
    return found


def test_full_incremental_and_restore_bit_exact(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=db01")  # GlusterFS and block (LVM) domains, qcow2
    ids = [d.id for d in vm_disks(connection, vm)]
    lvs_before = active_lvs(lab)
    options = {"mode": "ssh", "keep_snapshot": True}
    full = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
    assert full.kind == "full"
    assert len(drover_snapshots(connection, vm)) == 1  # kept for the next incremental
    before = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}

    lab_write(lab, vm.name, 0, offset=7 * MiB + 512, length=300 * 1024)
    lab_write(lab, vm.name, 1, offset=0, length=64 * 1024)
    incremental = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
    after = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    assert incremental.kind == "incremental", incremental.warnings
    assert sum(d.bytes_read for d in incremental.disks) < sum(d.bytes_read for d in full.disks)
    assert sum(d.bytes_read for d in incremental.disks) <= 2 * MiB  # the deltas, not the disks

    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(full.id, disk_id) == before[disk_id]
        assert repo.image_sha256(incremental.id, disk_id) == after[disk_id]
    manifest = repo.manifest(incremental.id)
    assert manifest.parent_id == full.id
    assert all(len(d.chain) == 1 for d in manifest.disks)  # one delta layer each
    assert drover_snapshots(connection, vm) == [manifest.checkpoint_id]
    assert active_lvs(lab) == lvs_before

    restore_and_verify(
        connection,
        celery_app,
        store,
        manager,
        repo_dir,
        incremental.id,
        "db01-ssh",
        after,
        mode="ssh",
        kept_snapshots=1,
    )
    assert active_lvs(lab) == lvs_before


def test_netcat_backup_without_kept_snapshot(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=web01")  # one raw disk on an NFS domain
    ids = [d.id for d in vm_disks(connection, vm)]
    expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    job = backup(
        celery_app, store, manager, vm, ids, repo_dir, mode="ssh", netcat=True, incremental=False
    )
    assert job.kind == "full"
    assert drover_snapshots(connection, vm) == []  # no policy of the VM is incremental
    assert no_leftovers(connection) == NO_LEFTOVERS
    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(job.id, disk_id) == expected[disk_id]
    restore_and_verify(
        connection, celery_app, store, manager, repo_dir, job.id, "web01-ssh", expected, mode="ssh"
    )


def lvchange(lab: dict[str, Any], flag: str, vg_lv: str) -> None:
    """The lab hosts' own lvchange, as an operator (or vdsm) would run it on each host."""
    for host in lab["hosts"]:
        tool = Path(host["dev_root"]).parent / "bin" / "lvchange"
        subprocess.run([str(tool), flag, vg_lv], check=True, capture_output=True)


def test_vm_without_guest_agent_incremental_and_restore_with_an_lv_already_active(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=app01")  # raw on block, qcow2 on NFS; no guest agent
    disks = vm_disks(connection, vm)
    ids = [d.id for d in disks]
    block = next(d for d in disks if d.format == types.DiskFormat.RAW)
    in_use = f"{block.storage_domains[0].id}/{block.image_id}"
    lvchange(lab, "-ay", in_use)  # active before: it must stay active
    try:
        lvs_before = active_lvs(lab)
        options = {"mode": "ssh", "quiesce": True, "keep_snapshot": True}
        full = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
        assert full.status == JobStatus.SUCCEEDED_WITH_WARNINGS
        assert any("without quiescing: no guest agent" in w for w in full.warnings)
        assert active_lvs(lab) == lvs_before

        lab_write(lab, vm.name, 0, offset=5 * MiB, length=96 * 1024)
        lab_write(lab, vm.name, 1, offset=200 * MiB, length=8 * 1024)
        incremental = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
        assert incremental.kind == "incremental", incremental.warnings
        assert active_lvs(lab) == lvs_before
    finally:
        lvchange(lab, "-an", in_use)
    expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(incremental.id, disk_id) == expected[disk_id]
    restore_and_verify(
        connection,
        celery_app,
        store,
        manager,
        repo_dir,
        incremental.id,
        "app01-ssh",
        expected,
        mode="ssh",
        kept_snapshots=1,
    )


def test_a_changed_host_key_stops_the_job_naming_the_host(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
) -> None:
    vm = find_vm(connection, "name=file01")
    ids = [d.id for d in vm_disks(connection, vm)]
    impostor = "SHA256:" + "A" * 43
    for host in lab["hosts"]:
        save_host(store, manager, lab_host_access(host, host_key=impostor))
    try:
        job_id = start_backup(celery_app, store, manager, vm, ids, repo_dir, mode="ssh")
        job = wait_job(store, job_id)
    finally:
        for host in lab["hosts"]:
            save_host(store, manager, lab_host_access(host))
    assert job.status == JobStatus.FAILED
    assert "the host key of host" in job.error and "has changed" in job.error
    assert Repository.open(str(repo_dir)).list_backups() == []
    assert no_leftovers(connection) == NO_LEFTOVERS
    wait_for(lambda: store.vm_lock_holder(vm.id) == "", "VM unlocked")


def _agent_sessions() -> list[int]:
    """The sshd processes serving Drover's agents: killing them drops the SSH connection."""
    parents = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if b"drover-agent" in cmdline and b"python3" in cmdline:
            parents.add(int(stat.rsplit(")", 1)[1].split()[1]))
    return sorted(parents)


def test_a_dropped_ssh_connection_resumes_without_a_corrupt_backup(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=web01")
    ids = [d.id for d in vm_disks(connection, vm)]
    lab_write(lab, vm.name, 0, offset=16 * MiB, length=200 * MiB)
    expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
    job_id = start_backup(celery_app, store, manager, vm, ids, repo_dir, mode="ssh")
    wait_for(lambda: stored_chunks(store, job_id) >= 2, "first chunks stored", timeout_s=120)
    sessions = wait_for(_agent_sessions, "the agents' SSH sessions", timeout_s=30)
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    job = wait_job(store, job_id)
    assert job.status in (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED_WITH_WARNINGS), job.error
    planned = sum(d.planned_chunks for d in job.disks)
    assert sum(d.chunks_read for d in job.disks) <= planned + 8  # resumed, not restarted
    repo = Repository.open(str(repo_dir))
    for disk_id in ids:
        assert repo.image_sha256(job.id, disk_id) == expected[disk_id]
    assert no_leftovers(connection) == NO_LEFTOVERS


def stored_chunks(store: StateStore, job_id: str) -> int:
    job = store.job(job_id)
    return sum(d.done_chunks for d in job.disks) if job else 0


def test_a_deleted_kept_snapshot_falls_back_to_a_full_with_a_warning(
    connection: Any, celery_app: Any, store: StateStore, manager: str, repo_dir: Path
) -> None:
    vm = find_vm(connection, "name=file01")
    ids = [d.id for d in vm_disks(connection, vm)]
    options = {"mode": "ssh", "keep_snapshot": True, "quiesce": False}
    assert backup(celery_app, store, manager, vm, ids, repo_dir, **options).kind == "full"
    [kept] = drover_snapshots(connection, vm)
    snapshots = connection.system_service().vms_service().vm_service(vm.id).snapshots_service()
    snapshots.snapshot_service(kept).remove()  # someone deleted it
    wait_for(lambda: not drover_snapshots(connection, vm), "kept snapshot removed")
    job = backup(celery_app, store, manager, vm, ids, repo_dir, **options)
    assert job.kind == "full"
    assert any(
        f"snapshot chain broken: the engine no longer has snapshot {kept}" in w
        for w in job.warnings
    ), job.warnings
    assert len(drover_snapshots(connection, vm)) == 1


def test_a_chain_of_several_layers_is_merged_bit_exact(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    """An operator's own snapshot below ours: the full reads both layers of each disk (the
    lower one found through the qcow2 backing file: relative on GlusterFS, an LV on block)."""
    vm = find_vm(connection, "name=db01")
    ids = [d.id for d in vm_disks(connection, vm)]
    lab_write(lab, vm.name, 0, offset=2 * MiB, length=512 * 1024)
    with snapshot(connection, vm):  # the operator's, kept through the backup
        lab_write(lab, vm.name, 0, offset=2 * MiB + 256 * 1024, length=512 * 1024)
        lab_write(lab, vm.name, 1, offset=30 * MiB, length=128 * 1024)
        expected = {d: disk_sha256(lab, connection, d, tmp_path) for d in ids}
        lvs_before = active_lvs(lab)
        job = backup(celery_app, store, manager, vm, ids, repo_dir, mode="ssh", incremental=False)
        assert active_lvs(lab) == lvs_before
        manifest = Repository.open(str(repo_dir)).manifest(job.id)
        assert all(len(d.chain) >= 2 for d in manifest.disks), [d.chain for d in manifest.disks]
        restore_and_verify(
            connection,
            celery_app,
            store,
            manager,
            repo_dir,
            job.id,
            "db01-layers",
            expected,
            mode="ssh",
            kept_snapshots=1,  # the operator's
        )
