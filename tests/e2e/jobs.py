"""Submit backups and restores straight to the fleet and wait for them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared.jobs import BackupRequest, GuestCommand, RestoreRequest
from shared.state import JobState, JobStatus, StateStore, new_job_id
from workers.canvas import queue_backup_job, submit_restore

JOB_TIMEOUT_S = 240.0


def start_backup(
    app: Any,
    store: StateStore,
    manager: str,
    vm: Any,
    disk_ids: list[str],
    repo: Path,
    **options: Any,
) -> str:
    job_id = new_job_id()
    request = BackupRequest(
        job_id=job_id,
        policy="e2e",
        manager=manager,
        vm_id=vm.id,
        vm_name=vm.name,
        repository=str(repo),
        **options,
    )
    return queue_backup_job(app, store, request, disk_ids)


def wait_job(store: StateStore, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> JobState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if job is not None and job.status.finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {store.job(job_id)}")


def backup(
    app: Any,
    store: StateStore,
    manager: str,
    vm: Any,
    disk_ids: list[str],
    repo: Path,
    **options: Any,
) -> JobState:
    job = wait_job(store, start_backup(app, store, manager, vm, disk_ids, repo, **options))
    assert job.status in (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED_WITH_WARNINGS), job.error
    return job


def restore(
    app: Any, store: StateStore, manager: str, repo: Path, backup_id: str, name: str
) -> JobState:
    job_id = new_job_id()
    store.create_job(JobState(id=job_id, vm_id="", mode="restore", manager=manager))
    submit_restore(
        app,
        RestoreRequest(
            job_id=job_id, manager=manager, repository=str(repo), backup_id=backup_id, name=name
        ),
    )
    job = wait_job(store, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


__all__ = ["GuestCommand", "backup", "restore", "start_backup", "wait_job"]
