"""How a job step fails: retry what may pass later, otherwise clean up and record why.

Cleanup leaves nothing on the engine (no image transfer, no backup left READY, no
snapshot) and releases the VM lock, whichever step failed. A worker that dies never
gets here: its message is re-delivered and the step resumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task
from celery.exceptions import Retry

from shared.errors import DroverError
from shared.jobs import BackupRequest
from shared.logging import bind_ids, get_logger
from shared.state import JobStatus
from workers.resources import connect_engine, state_store

MAX_RETRIES = 3
RETRY_DELAY_S = 5

log = get_logger(__name__)


@contextmanager
def job_step(task: Task, request: BackupRequest, step: str, disk_ids: list[str]) -> Iterator[None]:
    bind_ids(job_id=request.job_id, vm_id=request.vm_id, step=step)
    state_store().renew_vm_lock(request.vm_id, request.job_id)
    try:
        yield
    except Retry:
        raise
    except Exception as error:
        if _may_retry(task, error):
            log.warning("step failed, retrying", error=str(error))
            raise task.retry(exc=error, countdown=RETRY_DELAY_S, max_retries=MAX_RETRIES) from error
        fail_job(request, disk_ids, f"{step}: {describe(error)}")
        raise


def _may_retry(task: Task, error: Exception) -> bool:
    retries = int(getattr(task.request, "retries", 0) or 0)
    return isinstance(error, DroverError) and error.retryable and retries < MAX_RETRIES


def describe(error: BaseException) -> str:
    if isinstance(error, DroverError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def fail_job(request: BackupRequest, disk_ids: list[str], reason: str) -> None:
    """Clean up what this job made on the engine, record the first failure, unlock the VM.

    A job that never held the VM (another job has it) touches nothing on the engine."""
    store = state_store()
    log.error("job failed", reason=reason)
    if store.vm_lock_holder(request.vm_id) == request.job_id:
        _clean_engine(request, disk_ids)
    _record_failure(request.job_id, reason)
    store.unlock_vm(request.vm_id, request.job_id)


def _clean_engine(request: BackupRequest, disk_ids: list[str]) -> None:
    try:
        with connect_engine(request.manager) as engine:
            engine.cleanup_vm(request.vm_id, disk_ids)
            _thaw_quietly(engine, request)
    except Exception as error:  # cleanup must not hide the first failure
        state_store().add_warning(request.job_id, f"cleanup incomplete: {describe(error)}")


def _record_failure(job_id: str, reason: str) -> None:
    """Sibling steps fail after the first one's cleanup; the first reason is the one to show."""
    store = state_store()
    job = store.job(job_id)
    if job is not None and job.status == JobStatus.FAILED:
        store.add_warning(job_id, f"also failed: {reason}")
    else:
        store.set_status(job_id, JobStatus.FAILED, reason)


def _thaw_quietly(engine: Any, request: BackupRequest) -> None:
    job = state_store().job(request.job_id)
    if job and job.engine_objects.get("frozen"):
        with contextlib.suppress(DroverError):
            engine.thaw(request.vm_id)
