"""The backup steps called in-process against the lab and a real Redis (no Celery), to put
a job in states a worker reaches only by bad luck: a disk gone since queueing, an engine that
lost the job's backup, a step whose job lost its VM to a newer one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.backup import pipeline
from shared.backup.step import JobStep
from shared.engine.client import EngineClient, Guard
from shared.jobs import BackupRequest
from shared.modes import Leftovers, mode_for
from shared.repository.repository import Repository
from shared.state import JobState, LostVmLock, StateStore, new_job_id
from tests.e2e.test_image_transfer_mode import no_leftovers
from tests.integration.engine_client import connect
from workers.resources import engine_settings

pytestmark = pytest.mark.integration
VM = "app01"  # two disks (raw on a block domain, qcow2 on NFS), no guest agent


@pytest.fixture
def connection(lab: dict[str, Any]) -> Iterator[Any]:
    with connect(lab) as conn:
        yield conn


@pytest.fixture
def engine(store: StateStore, manager: str) -> Iterator[EngineClient]:
    with EngineClient.connect(engine_settings(manager, store)) as client:
        yield client


def queued_step(
    store: StateStore, manager: str, repo_dir: Path, vm: Any, disk_ids: tuple[str, ...]
) -> JobStep:
    """A job as `queue_backup` leaves it (VM claimed, request stored), without a broker."""
    job_id = new_job_id()
    request = BackupRequest(
        job_id=job_id,
        policy="steps",
        manager=manager,
        vm_id=vm.id,
        vm_name=vm.name,
        repository=str(repo_dir),
        disk_ids=disk_ids,
        quiesce=False,
    )
    fence = store.lock_vm(vm.id, job_id)
    store.create_job(
        JobState(
            id=job_id, vm_id=vm.id, vm_name=vm.name, manager=manager, mode=request.mode, fence=fence
        )
    )
    store.save_request(job_id, request.to_dict())

    def connect_engine(manager_name: str, guard: Guard) -> EngineClient:
        return EngineClient.connect(engine_settings(manager_name, store), guard)

    return JobStep.load(store, job_id, connect_engine, Repository.open)


def clean(step: JobStep, engine: EngineClient) -> None:
    """What fail_job does for a job that ends here."""
    request = step.request
    leftovers = Leftovers(
        engine,
        request.vm_id,
        list(request.disk_ids),
        step.journal.objects(),
        request.manager,
        step.store,
    )
    mode_for(request.mode).cleanup(leftovers)
    step.journal.clear()
    step.store.fail_once(request.job_id, "ended by the test")
    step.store.unlock_vm(request.vm_id, request.job_id)


def warnings(store: StateStore, job_id: str) -> str:
    job = store.job(job_id)
    return " | ".join(job.warnings if job else [])


def test_disks_removed_or_added_after_queueing_are_said_not_crashed_on(
    store: StateStore, manager: str, repo_dir: Path, engine: EngineClient, connection: Any
) -> None:
    vm = next(v for v in engine.find_vms(names=[VM]))
    first, second = vm.disks[0].id, vm.disks[1].id
    gone = str(uuid.uuid4())
    step = queued_step(store, manager, repo_dir, vm, (first, gone))
    try:
        pipeline.prepare(step)
        assert step.context().disk_ids == [first]
        said = warnings(store, step.request.job_id)
        assert f"disk {gone} was removed from the VM after the job was queued" in said
        assert f"disk {vm.disks[1].name} was added to the VM after the job was queued" in said
        assert second not in step.context().disk_ids
        assert pipeline.transfer(step, gone) == {"disk_id": gone, "skipped": True}
    finally:
        clean(step, engine)
    no_leftovers(connection)


def test_a_start_whose_engine_backup_is_gone_starts_a_new_one(
    store: StateStore, manager: str, repo_dir: Path, engine: EngineClient, connection: Any
) -> None:
    vm = next(v for v in engine.find_vms(names=[VM]))
    step = queued_step(store, manager, repo_dir, vm, tuple(d.id for d in vm.disks))
    lost = str(uuid.uuid4())
    try:
        pipeline.prepare(step)
        step.journal.record("backup", lost)  # an earlier attempt's backup, forgotten by the engine
        pipeline.start(step)
        handle = step.context().handle
        assert handle and handle != lost
        assert [b.id for b in engine.open_backups(vm.id)] == [handle]
        assert f"engine backup {lost} of an earlier attempt is gone" in warnings(
            store, step.request.job_id
        )
    finally:
        clean(step, engine)
    no_leftovers(connection)


def test_a_step_whose_job_lost_the_vm_touches_neither_engine_nor_repository(
    store: StateStore, manager: str, repo_dir: Path, engine: EngineClient, connection: Any
) -> None:
    vm = next(v for v in engine.find_vms(names=[VM]))
    stale = queued_step(store, manager, repo_dir, vm, (vm.disks[1].id,))
    try:
        pipeline.prepare(stale)
        pipeline.start(stale)
        pipeline.transfer(stale, vm.disks[1].id)
        # the job's worker "died"; its lock expired and a newer job took the VM
        store.unlock_vm(vm.id, stale.request.job_id)
        newer = store.lock_vm(vm.id, "newer-job")
        with pytest.raises(LostVmLock, match="no longer holds"):
            pipeline.finalize(stale)
        assert [b.phase for b in engine.open_backups(vm.id)] == ["ready"]  # not finalized
        assert Repository.open(str(repo_dir)).backup_ids() == []  # nothing committed
        with pytest.raises(LostVmLock):
            pipeline.start(stale)
        assert len(engine.open_backups(vm.id)) == 1  # no second backup
        assert newer > stale.journal.fence
    finally:
        store.unlock_vm(vm.id, "newer-job")
        store.lock_vm(vm.id, stale.request.job_id)
        clean(stale, engine)
    no_leftovers(connection)


def test_the_engine_clients_guard_runs_before_every_change(
    store: StateStore, manager: str, engine: EngineClient
) -> None:
    vm = next(v for v in engine.find_vms(names=[VM]))

    def fenced_off() -> None:
        raise LostVmLock("this job no longer holds the VM")

    with EngineClient.connect(engine_settings(manager, store), fenced_off) as guarded:
        assert guarded.vm(vm.id).name == VM  # reading is always allowed
        with pytest.raises(LostVmLock):
            guarded.start_backup(vm.id, [d.id for d in vm.disks])
        with pytest.raises(LostVmLock):
            guarded.cleanup_vm(vm.id, [d.id for d in vm.disks])
    assert engine.open_backups(vm.id) == []


def test_the_reaper_closes_what_a_dead_job_left_and_never_touches_a_live_one(
    store: StateStore, manager: str, repo_dir: Path, engine: EngineClient, connection: Any
) -> None:
    from shared.reaper import reap

    def connect_manager(name: str) -> EngineClient:
        return EngineClient.connect(engine_settings(name, store))

    vm = next(v for v in engine.find_vms(names=[VM]))
    step = queued_step(store, manager, repo_dir, vm, tuple(d.id for d in vm.disks))
    pipeline.prepare(step)
    pipeline.start(step)  # an engine backup in READY, held by a live job
    mine = [r for r in reap(store, connect_manager).jobs if r.job_id == step.request.job_id]
    assert mine == [] and len(engine.open_backups(vm.id)) == 1

    store.unlock_vm(vm.id, step.request.job_id)  # its worker and message are gone; lock expired
    dry = [
        r
        for r in reap(store, connect_manager, dry_run=True).jobs
        if r.job_id == step.request.job_id
    ]
    assert [r.action for r in dry] == ["would clean"] and "lock expired" in dry[0].why
    assert len(engine.open_backups(vm.id)) == 1  # a dry run changes nothing

    done = [r for r in reap(store, connect_manager).jobs if r.job_id == step.request.job_id]
    assert [r.action for r in done] == ["cleaned"]
    assert engine.open_backups(vm.id) == []
    job = store.job(step.request.job_id)
    assert job is not None and job.status == "failed" and job.error.startswith("reaped: ")
    again = [r for r in reap(store, connect_manager).jobs if r.job_id == step.request.job_id]
    assert again == []
    no_leftovers(connection)
