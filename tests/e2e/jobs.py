"""Submit backups and restores straight to the fleet and wait for them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.fleet import queue_lab_backup
from shared.engine.client import EngineClient
from shared.jobs import GuestCommand, RestoreRequest
from shared.modes import mode_for
from shared.state import JobState, JobStatus, StateStore, new_job_id
from workers.canvas import submit_restore
from workers.resources import engine_settings

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
    with EngineClient.connect(engine_settings(manager, store)) as engine:
        return queue_lab_backup(
            app, store, engine, vm.id, disk_ids, str(repo), policy="e2e", **options
        )


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
    app: Any,
    store: StateStore,
    manager: str,
    repo: Path,
    backup_id: str,
    name: str,
    mode: str = "image_transfer",
    cluster: str = "",
) -> JobState:
    """`cluster`: where the VM is restored ("": the backup's), whose proxy a disk attachment
    restore goes through."""
    job_id = new_job_id()
    store.create_job(JobState(id=job_id, vm_id="", mode="restore", manager=manager))
    request = RestoreRequest(
        job_id=job_id,
        manager=manager,
        repository=str(repo),
        backup_id=backup_id,
        name=name,
        cluster=cluster,
        mode=mode,
    )
    submit_restore(app, request, mode_for(request.mode).queue(cluster))
    job = wait_job(store, job_id)
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


__all__ = ["GuestCommand", "backup", "restore", "start_backup", "wait_job"]
