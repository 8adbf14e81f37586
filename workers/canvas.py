"""How a job becomes Celery work: task names, queues and the canvas per job.

Backup: prepare -> start -> one transfer per disk (a chord; in turn for a mode that reads one
disk at a time) -> finalize. Messages carry the job id (and a disk id); the request and the
steps' context live in Redis. Every step that fails runs the job's cleanup itself (see
workers.failures), so no errback wiring is needed for "nothing left behind".
"""

from __future__ import annotations

from celery import Celery, chain, chord, group

from shared.jobs import BackupRequest, RestoreRequest
from shared.modes import mode_of
from workers.priority import broker_priority

PREPARE = "drover.backup.prepare"
START = "drover.backup.start"
TRANSFER = "drover.backup.transfer_disk"
FINALIZE = "drover.backup.finalize"
RESTORE = "drover.restore.run"
CONTROL_QUEUE = "drover.default"


def backup_canvas(app: Celery, request: BackupRequest, queue: str) -> chain:
    job_id = request.job_id
    options = {"priority": broker_priority(app, request.priority), "immutable": True}
    # Results travel through Redis state; only the chord's transfers need the result backend.
    quiet = {**options, "ignore_result": True}
    steps = [
        app.signature(PREPARE, args=(job_id,), queue=CONTROL_QUEUE, **quiet),
        app.signature(START, args=(job_id,), queue=CONTROL_QUEUE, **quiet),
    ]
    transfers = [
        app.signature(TRANSFER, args=(job_id, disk_id), queue=queue, **options)
        for disk_id in request.disk_ids
    ]
    if mode_of(request).one_disk_at_a_time:  # each disk's step once the previous one ended
        finalize = app.signature(FINALIZE, args=([], job_id), queue=CONTROL_QUEUE, **quiet)
        return chain(*steps, *transfers, finalize)
    # the chord passes the transfers' results to finalize
    finalize = app.signature(
        FINALIZE, args=(job_id,), queue=CONTROL_QUEUE, priority=options["priority"]
    ).set(ignore_result=True)
    return chain(*steps, chord(group(transfers), finalize))


def submit_backup(app: Celery, request: BackupRequest, queue: str) -> None:
    backup_canvas(app, request, queue).apply_async()


def submit_restore(app: Celery, request: RestoreRequest, queue: str) -> None:
    app.send_task(
        RESTORE,
        args=(request.to_dict(),),
        queue=queue,
        task_id=request.job_id,
        ignore_result=True,
    )
