"""The backup job's steps, mode-neutral: prepare -> start -> transfer (per disk) -> finalize.

Each step is idempotent: a re-delivered message finds its work in Redis (the context, the
chunks stored, the engine objects recorded) and carries on from there. Each step first checks
that its job still holds the VM (the fence): a late message of a job whose VM went to a newer
job stops there. What differs between
modes is behind `shared.modes.base.TransferMode`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.backup.chain import KindChoice, choose_kind
from shared.backup.context import DiskRef, JobContext
from shared.backup.enqueue import selected_disks
from shared.backup.manifests import build_manifest
from shared.backup.retention import after_commit as apply_retention
from shared.backup.step import JobStep
from shared.engine.models import VmInfo
from shared.guest import run_guest_command
from shared.logging import get_logger
from shared.modes import JobRun, TransferMode, mode_of
from shared.state import JobStatus

log = get_logger(__name__)


def prepare(step: JobStep) -> None:
    """Check the job still holds its VM, read the VM and its OVF, choose full or incremental.
    The context is saved last: a re-delivered prepare that finds it has nothing to do."""
    request, store = step.request, step.store
    step.journal.check_fence()
    if store.context(request.job_id) is not None:
        return
    store.set_status(request.job_id, JobStatus.RUNNING)
    repo, mode = step.repository(), mode_of(request)
    with step.engine() as engine:
        vm = engine.vm(request.vm_id)
        ovf = engine.vm_ovf(request.vm_id)
        choice = choose_kind(request, repo.list_backups(request.vm_id), mode, engine)
    disks = _disks(step, vm, mode)
    context = _with_kind(
        JobContext(request, vm.name, vm.cluster_name, repo.chunk_size, disks), choice
    )
    for warning in [*choice.warnings, *_full_disk_warnings(context)]:
        step.journal.warn(warning)
    store.save_ovf(request.job_id, ovf)
    store.update_job(request.job_id, kind=context.kind, backup_id=request.job_id)
    store.save_context(request.job_id, context.to_dict())


def _disks(step: JobStep, vm: VmInfo, mode: TransferMode) -> tuple[DiskRef, ...]:
    """The disks decided when the job was queued, as the VM has them now. A disk removed
    since is left out and one added since is not backed up; both are said in warnings."""
    wanted, current = step.request.disk_ids, {d.id: d for d in vm.disks}
    for disk_id in wanted:
        if disk_id not in current:
            step.journal.warn(f"disk {disk_id} was removed from the VM after the job was queued")
    for disk in selected_disks(vm, step.request.excluded_disks):
        if disk.id not in wanted:
            step.journal.warn(
                f"disk {disk.name or disk.id} was added to the VM after the job was queued: "
                "it is not in this backup (the next run takes it)"
            )
    return tuple(
        DiskRef.from_info(current[d], incremental_capable=mode.incremental_capable(current[d]))
        for d in wanted
        if d in current
    )


def _with_kind(context: JobContext, choice: KindChoice) -> JobContext:
    if choice.kind != "incremental" or choice.parent is None:
        return context
    in_parent = {d.disk_id for d in choice.parent.disks}
    disks = tuple(
        replace(d, incremental=d.incremental_capable and d.id in in_parent) for d in context.disks
    )
    parent_id = choice.parent.backup_id
    return replace(
        context,
        kind="incremental",
        parent_id=parent_id,
        from_anchor=choice.from_anchor,
        disks=disks,
    )


def _full_disk_warnings(context: JobContext) -> list[str]:
    """Why a disk of an incremental is read in full."""
    if context.kind != "incremental":
        return []
    return [
        f"disk {d.name or d.id} is read in full: "
        + (
            "it has no incremental tracking"
            if not d.incremental_capable
            else "it is new since the parent"
        )
        for d in context.disks
        if not d.incremental
    ]


def start(step: JobStep) -> None:
    """Pre-command, the mode's engine backup or snapshot (quiesced), post-command.

    A re-delivered start whose begin completed runs no guest command again; begin itself
    takes up what the earlier attempt recorded."""
    step.journal.check_fence()
    request, context = step.request, step.context()
    commands = not context.handle
    if commands and request.pre_command:
        run_guest_command(request.pre_command, "pre-snapshot")
    with step.engine() as engine:
        started = mode_of(request).begin(JobRun(context, engine, step.journal))
    if commands and request.post_command:
        run_guest_command(request.post_command, "post-snapshot")
    if context.kind == "incremental" and not started.incremental:
        why = started.why_full or "the engine could not back up incrementally"
        step.journal.warn(f"{why}: taking a full backup")
        context = context.as_full()
        step.store.update_job(request.job_id, kind="full")
    step.store.save_context(
        request.job_id, context.started(started.handle, started.anchor).to_dict()
    )


def transfer(step: JobStep, disk_id: str) -> dict[str, Any]:
    step.journal.check_fence()
    context = step.context()
    disk = context.disk(disk_id)
    if disk is None:
        return {"disk_id": disk_id, "skipped": True}  # removed before prepare (see warnings)
    repo = step.repository()
    with step.engine() as engine:
        mode_of(step.request).transfer_disk(JobRun(context, engine, step.journal), disk, repo)
    return {"disk_id": disk_id, "incremental": disk.incremental}


def finalize(step: JobStep) -> dict[str, str]:
    """Finish on the engine, commit the manifest (still holding the VM), drop what it obsoletes,
    then apply the policy's retention to the VM's backups."""
    step.journal.check_fence()
    request, store, context = step.request, step.store, step.context()
    repo, mode = step.repository(), mode_of(request)
    with step.engine() as engine:
        run = JobRun(context, engine, step.journal)
        mode.finish(run)
        manifest = build_manifest(
            context, store, repo, store.ovf(request.job_id), step.journal.warnings()
        )
        step.journal.check_fence()
        repo.commit_manifest(manifest)
        mode.after_commit(run)
    step.journal.clear()
    apply_retention(step, request.vm_id)  # never raises: a problem is a warning on the job
    warnings = step.journal.warnings()
    status = JobStatus.SUCCEEDED_WITH_WARNINGS if warnings else JobStatus.SUCCEEDED
    store.set_status(request.job_id, status)
    store.unlock_vm(request.vm_id, request.job_id)
    log.info("backup committed", backup_id=manifest.backup_id, kind=manifest.kind)
    return {"backup_id": manifest.backup_id, "kind": manifest.kind}
