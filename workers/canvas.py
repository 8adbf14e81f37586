"""How a job becomes Celery work: task names, queues and the canvas per job.

Backup: prepare -> start -> one transfer per disk (a chord) -> finalize. Every step that
fails runs the job's cleanup itself (see workers.tasks.steps), so no errback wiring is
needed for "nothing left behind".
"""

from __future__ import annotations

from celery import Celery, chain, chord, group
from celery.result import AsyncResult

from shared.jobs import BackupRequest, RestoreRequest
from shared.state import JobState, StateStore

PREPARE = "drover.backup.prepare"
START = "drover.backup.start"
TRANSFER = "drover.backup.transfer_disk"
FINALIZE = "drover.backup.finalize"
RESTORE = "drover.restore.run"

MODE_QUEUES = {"image_transfer": "transfer.image", "ssh": "transfer.ssh"}
CONTROL_QUEUE = "drover.default"


def transfer_queue(mode: str, cluster: str = "") -> str:
    if mode == "disk_attachment":
        return f"proxy.{cluster}"
    return MODE_QUEUES[mode]


def backup_canvas(
    app: Celery, request: BackupRequest, disk_ids: list[str], cluster: str = ""
) -> chain:
    queue = transfer_queue(request.mode, cluster)
    # Results travel in messages; only the chord's transfers need the result backend.
    options = {"priority": request.priority}
    quiet = {**options, "ignore_result": True}
    transfers = group(
        app.signature(TRANSFER, args=(disk_id,), queue=queue, **options) for disk_id in disk_ids
    )
    finalize = app.signature(FINALIZE, args=(request.to_dict(),), queue=CONTROL_QUEUE, **quiet)
    return chain(
        app.signature(PREPARE, args=(request.to_dict(),), queue=CONTROL_QUEUE, **quiet),
        app.signature(START, queue=CONTROL_QUEUE, **quiet),
        chord(transfers, finalize),
    )


def submit_backup(
    app: Celery, request: BackupRequest, disk_ids: list[str], cluster: str = ""
) -> AsyncResult:
    return backup_canvas(app, request, disk_ids, cluster).apply_async()


def queue_backup_job(
    app: Celery, store: StateStore, request: BackupRequest, disk_ids: list[str], cluster: str = ""
) -> str:
    """Record the job as queued, then hand its canvas to the broker; returns the job id."""
    store.create_job(
        JobState(
            id=request.job_id,
            vm_id=request.vm_id,
            vm_name=request.vm_name,
            policy=request.policy,
            manager=request.manager,
            mode=request.mode,
        )
    )
    submit_backup(app, request, disk_ids, cluster)
    return request.job_id


def submit_restore(app: Celery, request: RestoreRequest) -> AsyncResult:
    return app.send_task(
        RESTORE,
        args=(request.to_dict(),),
        queue="transfer.image",
        task_id=request.job_id,
        ignore_result=True,
    )
