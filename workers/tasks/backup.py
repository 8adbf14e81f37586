"""The backup canvas' steps: prepare -> start -> transfer_disk (per disk) -> finalize.

Every step is idempotent: a re-delivered message finds its work in Redis (chunks
stored, engine objects created) and carries on from there.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from shared.backup.chain import choose_kind
from shared.backup.context import JobContext
from shared.backup.manifests import build_manifest
from shared.backup.transfer import transfer_disk_to_repository
from shared.engine.errors import CheckpointInvalid, NoGuestAgent
from shared.errors import DroverError
from shared.jobs import BackupRequest
from shared.logging import bind_ids, get_logger
from shared.state import JobStatus
from workers.canvas import FINALIZE, PREPARE, START, TRANSFER
from workers.failures import job_step
from workers.guest import run_guest_command
from workers.resources import connect_engine, repository, state_store

NO_AGENT_WARNING = "snapshot taken without quiescing: no guest agent"
log = get_logger(__name__)


@shared_task(name=PREPARE, bind=True)
def prepare(self: Task, request_data: dict[str, Any]) -> dict[str, Any]:
    request = BackupRequest.from_dict(request_data)
    store = state_store()
    with job_step(self, request, "prepare", []):
        store.lock_vm(request.vm_id, request.job_id)
        store.set_status(request.job_id, JobStatus.RUNNING)
        with connect_engine(request.manager) as engine:
            vm = engine.vm(request.vm_id)
            context = JobContext.new(request, vm, engine.vm_ovf(request.vm_id))
            choice = choose_kind(request, repository(request.repository), engine)
        context = context.with_kind(choice.kind, choice.parent_id, choice.from_checkpoint)
        for warning in choice.warnings:
            store.add_warning(request.job_id, warning)
        store.update_job(request.job_id, kind=choice.kind, backup_id=request.job_id)
        return context.to_dict()


@shared_task(name=START, bind=True)
def start(self: Task, context_data: dict[str, Any]) -> dict[str, Any]:
    context = JobContext.from_dict(context_data)
    request = context.request
    with job_step(self, request, "start", context.disk_ids):
        if request.pre_command:
            run_guest_command(request.pre_command, "pre-snapshot")
        with connect_engine(request.manager) as engine:
            context = _start_engine_backup(engine, context)
        if request.post_command:
            run_guest_command(request.post_command, "post-snapshot")
        state_store().save_context(request.job_id, context.to_dict())
        return context.to_dict()


def _start_engine_backup(engine: Any, context: JobContext) -> JobContext:
    request, store = context.request, state_store()
    existing = store.job(request.job_id)
    if existing and existing.engine_objects.get("backup"):
        return context.with_engine_backup(
            engine.backup(request.vm_id, existing.engine_objects["backup"])
        )
    frozen = _freeze(engine, context)
    try:
        backup = _add_backup(engine, context)
    finally:
        if frozen:
            engine.thaw(request.vm_id)
            store.remember_engine_object(request.job_id, "frozen", "")
    store.remember_engine_object(request.job_id, "backup", backup.id)
    if backup.from_checkpoint_id is None and context.kind == "incremental":
        context = context.with_kind("full", None, None)
        store.update_job(request.job_id, kind="full")
    return context.with_engine_backup(backup)


def _freeze(engine: Any, context: JobContext) -> bool:
    request = context.request
    if not request.quiesce:
        return False
    try:
        engine.freeze(request.vm_id)
    except NoGuestAgent:
        state_store().add_warning(request.job_id, NO_AGENT_WARNING)
        return False
    state_store().remember_engine_object(request.job_id, "frozen", "yes")
    return True


def _add_backup(engine: Any, context: JobContext) -> Any:
    request = context.request
    try:
        return engine.start_backup(request.vm_id, context.disk_ids, context.from_checkpoint)
    except CheckpointInvalid as error:
        state_store().add_warning(
            request.job_id, f"checkpoint chain broken ({error.message}): taking a full backup"
        )
        return engine.start_backup(request.vm_id, context.disk_ids, None)


@shared_task(name=TRANSFER, bind=True)
def transfer_disk(self: Task, context_data: dict[str, Any], disk_id: str) -> dict[str, Any]:
    context = JobContext.from_dict(context_data)
    request = context.request
    bind_ids(disk_id=disk_id)
    with job_step(self, request, "transfer", context.disk_ids):
        parent = _parent_manifest(context)
        with connect_engine(request.manager) as engine:
            result = transfer_disk_to_repository(
                engine=engine,
                store=state_store(),
                repo=repository(request.repository),
                context=context,
                disk_id=disk_id,
                incremental=_incremental(context, parent, disk_id),
            )
        return result


def _prune_checkpoints(engine: Any, request: BackupRequest, newest: str | None) -> None:
    """Only the newest checkpoint is needed for the next incremental; older ones cost the
    hypervisor a dirty bitmap each. The engine removes them oldest (root) first."""
    if not newest:
        return
    for checkpoint in engine.checkpoints(request.vm_id):
        if checkpoint == newest:
            return
        try:
            engine.remove_checkpoint(request.vm_id, checkpoint)
        except DroverError as error:
            state_store().add_warning(
                request.job_id, f"old checkpoint {checkpoint} not removed: {error}"
            )
            return


def _warnings(job_id: str) -> list[str]:
    job = state_store().job(job_id)
    return job.warnings if job else []


class JobStateLost(DroverError):
    """Redis lost what earlier steps recorded (a flushed or replaced Redis)."""


def _incremental(context: JobContext, parent: Any, disk_id: str) -> bool:
    """Dirty blocks only where the engine tracks them and the parent holds the disk."""
    if parent is None or not context.disk(disk_id).incremental_capable:
        return False
    return any(d.disk_id == disk_id for d in parent.disks)


def _parent_manifest(context: JobContext) -> Any:
    if context.kind != "incremental" or not context.parent_id:
        return None
    return repository(context.request.repository).manifest(context.parent_id)


@shared_task(name=FINALIZE, bind=True)
def finalize(
    self: Task, results: list[dict[str, Any]], request_data: dict[str, Any]
) -> dict[str, Any]:
    request = BackupRequest.from_dict(request_data)
    store = state_store()
    saved = store.context(request.job_id)
    disk_ids = JobContext.from_dict(saved).disk_ids if saved else []
    with job_step(self, request, "finalize", disk_ids):
        if saved is None:
            raise JobStateLost(f"job {request.job_id} has no saved context in Redis")
        context = JobContext.from_dict(saved)
        repo = repository(request.repository)
        with connect_engine(request.manager) as engine:
            engine.finalize_backup(request.vm_id, context.engine_backup_id)
            manifest = build_manifest(context, results, store, repo, _warnings(request.job_id))
            repo.commit_manifest(manifest)
            _prune_checkpoints(engine, request, context.to_checkpoint)
        warnings = _warnings(request.job_id)
        status = JobStatus.SUCCEEDED_WITH_WARNINGS if warnings else JobStatus.SUCCEEDED
        store.set_status(request.job_id, status)
        store.unlock_vm(request.vm_id, request.job_id)
        log.info("backup committed", backup_id=manifest.backup_id, kind=manifest.kind)
        return {"backup_id": manifest.backup_id, "kind": manifest.kind}
