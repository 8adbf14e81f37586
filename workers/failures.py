"""How a job step fails: retry what may pass later, otherwise clean up and record why.

Cleanup leaves nothing on the engine (no image transfer, no backup left READY, no
snapshot) and releases the VM lock, whichever step failed; it is the mode's, from the
engine objects the job recorded. A job that no longer holds its VM touches nothing on the
engine. The first error is the one the job reports: cleanup never replaces it. A worker
that dies never gets here: its message is re-delivered and the step resumes.

A job the operator cancelled (`drover jobs cancel`, orchestrator.service) is stopped and
cleaned by the cancel: a step of it that starts later does nothing, and one that fails
meanwhile (its VM lock was re-fenced, its engine objects are being removed) neither retries
nor records nor cleans anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task
from celery.exceptions import Ignore, Retry

from shared.backup.step import JobStateLost, JobStep
from shared.errors import DroverError
from shared.logging import bind_ids, get_logger
from shared.modes import Leftovers, mode_of
from shared.redact import redact
from shared.state import FailOutcome, JobStatus, StateStore
from workers.resources import connect_engine, repository, state_store

MAX_RETRIES = 3
RETRY_DELAY_S = 5

log = get_logger(__name__)


@contextmanager
def job_step(task: Task, job_id: str, name: str) -> Iterator[JobStep]:
    bind_ids(job_id=job_id, step=name)
    step = _load(job_id, name)
    bind_ids(vm_id=step.request.vm_id)
    if cancelled(step.store, job_id):
        log.info("the job was cancelled: step skipped")
        raise Ignore()
    step.journal.renew_lock()
    try:
        yield step
    except Retry:
        raise
    except Exception as error:
        if cancelled(step.store, job_id):
            log.info("a step of a cancelled job stopped", error=str(error))
            raise Ignore() from error
        if _may_retry(task, error):
            log.warning("step failed, retrying", error=str(error))
            raise task.retry(exc=error, countdown=RETRY_DELAY_S, max_retries=MAX_RETRIES) from error
        _fail_quietly(step, f"{name}: {describe(error)}")
        raise


def _load(job_id: str, name: str) -> JobStep:
    store = state_store()
    try:
        return JobStep.load(store, job_id, connect_engine, repository)
    except JobStateLost as error:
        if store.job(job_id) is not None:
            store.set_status(job_id, JobStatus.FAILED, f"{name}: {error}")
        raise


def cancelled(store: StateStore, job_id: str) -> bool:
    """Did the operator cancel the job? (False when Redis cannot say: the step's own error
    is what matters then.)"""
    try:
        return store.cancel_requested(job_id)  # one field, not the whole job
    except Exception:
        return False


def _may_retry(task: Task, error: Exception) -> bool:
    retries = int(getattr(task.request, "retries", 0) or 0)
    return isinstance(error, DroverError) and error.retryable and retries < MAX_RETRIES


def describe(error: BaseException) -> str:
    """What the job's error says: never a transfer ticket."""
    if isinstance(error, DroverError):
        return redact(str(error))
    return redact(f"unexpected {type(error).__name__}: {error}")


def _fail_quietly(step: JobStep, reason: str) -> None:
    """The step's own error is what propagates; a failure to record it is only logged."""
    try:
        fail_job(step, reason)
    except Exception as error:
        log.error("recording the failure failed", reason=reason, error=str(error))


def fail_job(step: JobStep, reason: str) -> None:
    """Record the failure (the first one wins), clean up what this job made on the engine,
    unlock the VM. Recorded first: the cleanup itself makes sibling steps fail."""
    store, request = step.store, step.request
    if cancelled(store, request.job_id):  # the cancel cleans up and unlocks
        log.info("a step of a cancelled job failed", reason=reason)
        return
    log.error("job failed", reason=reason)
    _record_failure(step, reason)
    if store.vm_lock_holder(request.vm_id) == request.job_id:
        _clean_engine(step)
    store.unlock_vm(request.vm_id, request.job_id)


def _clean_engine(step: JobStep) -> None:
    request, journal = step.request, step.journal
    try:
        with step.engine() as engine:
            disk_ids = journal.disk_ids(request.disk_ids)
            leftovers = Leftovers(
                engine, request.vm_id, disk_ids, journal.objects(), request.manager, step.store
            )
            mode_of(request).cleanup(leftovers)
        journal.clear()
    except Exception as error:  # cleanup must not hide the first failure; the reaper retries
        journal.warn(f"cleanup incomplete: {describe(error)}")


def _record_failure(step: JobStep, reason: str) -> None:
    """The job's first failure is its reason; a later one (a sibling step) is a warning; a
    late message of a job that succeeded changes nothing."""
    store, job_id = step.store, step.request.job_id
    outcome = store.fail_once(job_id, reason)
    if outcome == FailOutcome.ALREADY_FAILED:
        store.add_warning(job_id, f"also failed: {reason}")
    elif outcome == FailOutcome.ALREADY_SUCCEEDED:
        log.warning("a late step of a job that succeeded failed", reason=reason)
