"""Drover's Redis state against a real Redis: jobs, chunk progress, VM locks."""

from __future__ import annotations

import pytest

from shared.state import (
    DiskProgress,
    FailOutcome,
    JobState,
    JobStatus,
    StateStore,
    VmLocked,
    new_job_id,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


def test_vm_lock_is_exclusive_reentrant_and_renewed_only_by_its_holder(store: StateStore) -> None:
    vm, first, second = new_job_id(), new_job_id(), new_job_id()
    token = store.lock_vm(vm, first)
    assert store.lock_vm(vm, first) == token
    with pytest.raises(VmLocked, match=first):
        store.lock_vm(vm, second)
    assert store.renew_vm_lock(vm, first)
    assert not store.renew_vm_lock(vm, second)
    store.unlock_vm(vm, second)  # not the holder: nothing happens
    assert store.vm_lock_holder(vm) == first
    store.unlock_vm(vm, first)
    assert store.lock_vm(vm, second) > token  # fencing tokens only grow


def test_chunk_progress_counts_a_redelivered_chunk_once(store: StateStore) -> None:
    job = JobState(id=new_job_id(), vm_id="vm", vm_name="db01")
    store.create_job(job)
    store.plan_disk(job.id, DiskProgress("d1", "disk", 8 << 20, planned_chunks=2))
    store.record_chunk(job.id, "d1", 0, "a" * 64, 4 << 20)
    store.record_chunk(job.id, "d1", 0, "a" * 64, 4 << 20)
    store.record_skipped(job.id, "d1", 1)
    progress = store.job(job.id).disks[0]  # type: ignore[union-attr]
    assert (progress.planned_chunks, progress.done_chunks, progress.bytes_read) == (2, 2, 4 << 20)
    assert store.stored_chunks(job.id, "d1") == {0: "a" * 64, 1: ""}


def test_job_status_warnings_and_context(store: StateStore) -> None:
    job = JobState(id=new_job_id(), vm_id="vm")
    store.create_job(job)
    store.set_status(job.id, JobStatus.RUNNING)
    store.add_warning(job.id, "snapshot taken without quiescing: no guest agent")
    store.save_context(job.id, {"kind": "full"})
    store.set_status(job.id, JobStatus.SUCCEEDED_WITH_WARNINGS)
    loaded = store.job(job.id)
    assert loaded is not None and loaded.status.finished
    assert loaded.warnings == ["snapshot taken without quiescing: no guest agent"]
    assert store.context(job.id) == {"kind": "full"}
    assert loaded.started_at <= loaded.finished_at


def test_the_first_failure_keeps_its_reason(store: StateStore) -> None:
    job = JobState(id=new_job_id(), vm_id="vm")
    store.create_job(job)
    assert store.fail_once(job.id, "start: backup refused") == FailOutcome.FAILED_NOW
    assert store.fail_once(job.id, "transfer: cancelled") == FailOutcome.ALREADY_FAILED
    failed = store.job(job.id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.error == "start: backup refused" and failed.finished_at > 0


def test_a_late_failure_leaves_a_job_that_succeeded_as_it_was(store: StateStore) -> None:
    job = JobState(id=new_job_id(), vm_id="vm")
    store.create_job(job)
    store.set_status(job.id, JobStatus.SUCCEEDED)
    assert store.fail_once(job.id, "finalize: no longer holds VM") == FailOutcome.ALREADY_SUCCEEDED
    done = store.job(job.id)
    assert done is not None and done.status == JobStatus.SUCCEEDED and done.error == ""


def test_engine_objects_recorded_in_parallel_are_all_kept(store: StateStore) -> None:
    """One field each: parallel transfers never overwrite each other's records (a JSON field
    read, changed and written back lost some)."""
    from concurrent.futures import ThreadPoolExecutor

    job = JobState(id=new_job_id(), vm_id="vm")
    store.create_job(job)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store.record_engine_object(job.id, f"transfer:{n}", str(n)),
                      range(64)))  # fmt: skip
    recorded = store.engine_objects(job.id)
    assert recorded == {f"transfer:{n}": str(n) for n in range(64)}
    found = store.job(job.id)
    assert found is not None and found.engine_objects == recorded
