"""The backup canvas' tasks: thin dispatchers to `shared.backup.pipeline`.

Each task records its Celery id under its job when it starts, so `drover jobs cancel` can
revoke (and terminate) it whoever queued it.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from shared.backup import pipeline
from shared.backup.step import JobStep
from shared.logging import bind_ids
from workers.canvas import FINALIZE, PREPARE, START, TRANSFER
from workers.failures import job_step


def _recorded(task: Task, step: JobStep) -> JobStep:
    step.store.record_task(step.request.job_id, str(task.request.id or ""))
    return step


@shared_task(name=PREPARE, bind=True)
def prepare(self: Task, job_id: str) -> None:
    with job_step(self, job_id, "prepare") as step:
        pipeline.prepare(_recorded(self, step))


@shared_task(name=START, bind=True)
def start(self: Task, job_id: str) -> None:
    with job_step(self, job_id, "start") as step:
        pipeline.start(_recorded(self, step))


@shared_task(name=TRANSFER, bind=True)
def transfer_disk(self: Task, job_id: str, disk_id: str) -> dict[str, Any]:
    bind_ids(disk_id=disk_id)
    with job_step(self, job_id, "transfer") as step:
        step.store.record_disk_worker(job_id, disk_id, str(self.request.hostname or ""))
        return pipeline.transfer(_recorded(self, step), disk_id)


@shared_task(name=FINALIZE, bind=True)
def finalize(self: Task, results: list[dict[str, Any]], job_id: str) -> dict[str, str]:
    with job_step(self, job_id, "finalize") as step:
        return pipeline.finalize(_recorded(self, step))
