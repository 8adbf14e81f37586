"""Restore a backup as a new VM, through the disk sink of the request's mode."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from shared.backup.journal import JobJournal
from shared.jobs import RestoreRequest
from shared.logging import bind_ids, get_logger
from shared.restore.restore import restore_vm
from shared.state import JobStatus
from workers.canvas import RESTORE
from workers.failures import describe
from workers.resources import connect_engine, repository, state_store

log = get_logger(__name__)


@shared_task(name=RESTORE, bind=True)
def run_restore(self: Task, request_data: dict[str, Any]) -> dict[str, Any]:
    request = RestoreRequest.from_dict(request_data)
    bind_ids(job_id=request.job_id, backup_id=request.backup_id)
    store = state_store()
    store.set_status(request.job_id, JobStatus.RUNNING)
    journal = JobJournal(store, request.job_id, vm_id="", fence=0)
    try:
        with connect_engine(request.manager) as engine:
            result = restore_vm(engine, repository(request.repository), request, journal)
    except Exception as error:
        store.set_status(request.job_id, JobStatus.FAILED, f"restore: {describe(error)}")
        raise
    journal.clear()  # the restored VM and disks are the result, not leftovers
    store.save_context(request.job_id, result.to_dict())
    store.update_job(request.job_id, vm_name=result.vm_name, vm_id=result.vm_id)
    store.set_status(request.job_id, JobStatus.SUCCEEDED)
    log.info("restore verified", vm=result.vm_name, disks=len(result.disks))
    return result.to_dict()
