"""Restore a backup as a new VM, through the disk sink of the request's mode.

The job's context holds the result: the new VM, and per disk its checksum, whether the disk
read back matched the backup, and the bytes of data written. A restore the operator
cancelled (`drover jobs cancel`) does not start, and one that fails meanwhile leaves the job
to the cancel, which undoes what it created.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore

from shared.backup.journal import JobJournal
from shared.jobs import RestoreRequest
from shared.logging import bind_ids, get_logger
from shared.repository.repository import Repository
from shared.restore.restore import RestoreResult, restore_vm
from shared.state import JobStatus
from workers.canvas import RESTORE
from workers.failures import cancelled, describe
from workers.resources import connect_engine, repository, state_store

log = get_logger(__name__)


@shared_task(name=RESTORE, bind=True)
def run_restore(self: Task, request_data: dict[str, Any]) -> dict[str, Any]:
    request = RestoreRequest.from_dict(request_data)
    bind_ids(job_id=request.job_id, backup_id=request.backup_id)
    store = state_store()
    store.record_task(request.job_id, str(self.request.id or ""))
    if cancelled(store, request.job_id):
        log.info("the restore was cancelled: not started")
        raise Ignore()
    store.set_status(request.job_id, JobStatus.RUNNING)
    journal = JobJournal(store, request.job_id, vm_id="", fence=0)
    try:
        repo = repository(request.repository)
        with connect_engine(request.manager) as engine:
            result = restore_vm(engine, repo, request, journal)
    except Exception as error:
        if cancelled(store, request.job_id):
            log.info("a cancelled restore stopped", error=str(error))
            raise Ignore() from error
        store.set_status(request.job_id, JobStatus.FAILED, f"restore: {describe(error)}")
        raise
    journal.clear()  # the restored VM and disks are the result, not leftovers
    document = with_bytes_written(result, repo)
    store.save_context(request.job_id, document)
    store.update_job(request.job_id, vm_name=result.vm_name, vm_id=result.vm_id)
    store.set_status(request.job_id, JobStatus.SUCCEEDED)
    log.info("restore verified", vm=result.vm_name, disks=len(result.disks))
    return document


def with_bytes_written(result: RestoreResult, repo: Repository) -> dict[str, Any]:
    """The result with `bytes_written` per disk and in all: the data the backup holds for the
    disk (its stored chunks; zeros are not counted)."""
    document = result.to_dict()
    try:
        disks = {d.disk_id: d for d in repo.manifest(result.backup_id).disks}
    except Exception as error:  # the restore is done and verified: only the count is missing
        log.warning("counting the bytes written failed", error=str(error))
        return document
    for disk in document["disks"]:
        manifest = disks.get(disk["disk_id"])
        chunks = manifest.chunks if manifest is not None else {}
        disk["bytes_written"] = sum(manifest.chunk_length(i) for i in chunks) if manifest else 0
    document["bytes_written"] = sum(d.get("bytes_written", 0) for d in document["disks"])
    return document
