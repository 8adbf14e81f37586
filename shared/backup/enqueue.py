"""Queueing a backup job: the one path the API, the benchmarks and the tests use.

The disk list is decided here, once (the policy's exclusions applied); the VM is claimed
for the job (a lock with a fencing token) before anything is queued, so a second job never
takes a second snapshot; the request is stored in Redis and the messages carry only ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from shared.engine.models import DiskInfo, VmInfo
from shared.jobs import BackupRequest
from shared.logging import get_logger
from shared.state import JobState, JobStatus, StateStore, VmLocked

SubmitBackup = Callable[[BackupRequest, str], object]  # (request, transfer queue)
log = get_logger(__name__)


@dataclass(frozen=True)
class Queued:
    job_id: str
    vm: str
    vm_id: str
    disks: list[str]


@dataclass(frozen=True)
class Refused:
    vm: str
    vm_id: str
    reason: str


def selected_disks(vm: VmInfo, excluded: tuple[str, ...]) -> list[DiskInfo]:
    """The VM's disks less those excluded by id or by name."""
    return [d for d in vm.disks if not {d.id, d.name} & set(excluded)]


def queue_backup(
    store: StateStore,
    submit: SubmitBackup,
    request: BackupRequest,
    vm: VmInfo,
    queue: str,
    mode_reason: str = "",
) -> Queued | Refused:
    disks = [d.id for d in selected_disks(vm, request.excluded_disks)]
    if not disks:
        return Refused(vm.name, vm.id, "every disk of the VM is excluded by exclude_disks")
    request = replace(request, vm_id=vm.id, vm_name=vm.name, disk_ids=tuple(disks))
    fence, reason = claim_vm(store, vm, request.job_id)
    if reason:
        return Refused(vm.name, vm.id, reason)
    store.create_job(_job(request, fence, mode_reason))
    store.save_request(request.job_id, request.to_dict())
    try:
        submit(request, queue)
    except Exception as e:
        error = f"could not queue the job: {e}"
        store.set_status(request.job_id, JobStatus.FAILED, error)
        store.unlock_vm(vm.id, request.job_id)
        return Refused(vm.name, vm.id, f"{error} (is the broker at the configured URL reachable?)")
    return Queued(request.job_id, vm.name, vm.id, disks)


def claim_vm(store: StateStore, vm: VmInfo, job_id: str) -> tuple[int, str]:
    """(fencing token, "") once the VM is the job's; (0, reason) when a live job holds it."""
    for _attempt in range(2):
        try:
            return store.lock_vm(vm.id, job_id), ""
        except VmLocked:
            holder = store.vm_lock_holder(vm.id)
            reason = _live_holder(store, vm, holder)
            if reason:
                return 0, reason
            store.unlock_vm(vm.id, holder)  # its job finished: a stale lock
    return 0, f"VM {vm.name} is locked by another job: retry the run"


def _live_holder(store: StateStore, vm: VmInfo, holder: str) -> str:
    job = store.job(holder) if holder else None
    if job is not None and job.status.finished:
        return ""
    status = job.status if job is not None else "unknown"
    return (
        f"VM {vm.name} is already being backed up by job {holder} ({status}): "
        f"no second snapshot is taken; wait for that job (`drover jobs {holder}`)"
    )


def _job(request: BackupRequest, fence: int, mode_reason: str) -> JobState:
    return JobState(
        id=request.job_id,
        vm_id=request.vm_id,
        vm_name=request.vm_name,
        policy=request.policy,
        manager=request.manager,
        mode=request.mode,
        mode_reason=mode_reason,
        fence=fence,
    )
