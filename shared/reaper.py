"""The reaper: engine objects that belong to no live job are finalized or removed.

Every engine object a job makes is recorded in its journal before it is made, and the record
is cleared once the job has finished with them (committed, or cleaned up after a failure).
What is still recorded belongs to a job that died (its message lost), to a job whose cleanup
failed (the engine was down), or to a live job. The reaper walks the jobs and, for each one
that is no longer live, closes what it left on the engine through its mode's cleanup (a
restore: removes its half-made VM and disks), says what it did and why, and ends a job that
was still marked running as failed. It never touches what a live job holds: a backup job is
live while it has not finished and holds its VM's lock (a restore: while it runs), and a VM
whose lock another live job holds is left alone.

`clean_job` is the one way a job's engine objects are closed from outside its steps: the
reaper's, and the operator's cancel (orchestrator.service), which first stops the job's
steps (fence and revoke) and then cleans it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.backup.journal import JobJournal
from shared.engine.client import EngineClient
from shared.errors import DroverError
from shared.logging import get_logger
from shared.modes import Leftovers, mode_for
from shared.restore.restore import undo_recorded
from shared.state import JobState, StateStore

ConnectEngine = Callable[[str], EngineClient]  # manager name -> a connected client
JOBS_SCANNED = 10_000
CANCELLED = "cancelled by the operator"  # the reason of a job `drover jobs cancel` stopped
log = get_logger(__name__)


@dataclass(frozen=True)
class Reaped:
    job_id: str
    vm: str
    action: str  # cleaned | would clean | left alone | failed
    why: str
    objects: dict[str, str]


@dataclass
class ReapReport:
    dry_run: bool
    jobs: list[Reaped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reap(store: StateStore, connect: ConnectEngine, *, dry_run: bool = False) -> ReapReport:
    report = ReapReport(dry_run)
    for job in store.jobs(JOBS_SCANNED):
        outcome = _reap_job(store, connect, job, dry_run)
        if outcome is not None:
            log.info("reaper", job_id=job.id, action=outcome.action, why=outcome.why)
            report.jobs.append(outcome)
    return report


def _reap_job(
    store: StateStore, connect: ConnectEngine, job: JobState, dry_run: bool
) -> Reaped | None:
    objects = {name: value for name, value in job.engine_objects.items() if value}
    if not objects or _live(store, job):
        return None
    holder = store.vm_lock_holder(job.vm_id) if job.vm_id else ""
    if holder and _live(store, store.job(holder)):
        why = f"VM {job.vm_name or job.vm_id} is held by live job {holder}"
        return Reaped(job.id, job.vm_name, "left alone", why, objects)
    why = _why(job, holder)
    if dry_run:
        return Reaped(job.id, job.vm_name, "would clean", why, objects)
    if not job.status.finished:
        store.fail_once(job.id, CANCELLED if store.cancel_requested(job.id) else f"reaped: {why}")
    return _clean(store, connect, job, objects, why)


def clean_job(store: StateStore, connect: ConnectEngine, job: JobState, why: str) -> Reaped:
    """Close what `job` recorded on the engine through its mode's cleanup (a restore: undo
    what it created), whatever its state: the caller has made sure none of its steps works
    on any more. "cleaned" with nothing recorded is a no-op."""
    objects = {name: value for name, value in store.engine_objects(job.id).items() if value}
    if not objects:
        return Reaped(job.id, job.vm_name, "cleaned", f"{why}; nothing on the engine", objects)
    return _clean(store, connect, job, objects, why)


def _live(store: StateStore, job: JobState | None) -> bool:
    if job is None or job.status.finished:
        return False
    if job.mode == "restore":
        return True  # a restore whose worker died is re-delivered (workers.liveness)
    return store.vm_lock_holder(job.vm_id) == job.id


def _why(job: JobState, holder: str) -> str:
    if job.status.finished:
        return f"job {job.status}, its cleanup incomplete" + (
            f" ({job.error})" if job.error else ""
        )
    lock = f"went to job {holder}" if holder else "expired"
    return f"job {job.status} but its VM lock {lock}: its worker and message are gone"


def _clean(
    store: StateStore, connect: ConnectEngine, job: JobState, objects: dict[str, str], why: str
) -> Reaped:
    journal = JobJournal(store, job.id, job.vm_id, job.fence)
    try:
        with connect(job.manager) as engine:
            if job.mode == "restore":
                undo_recorded(engine, journal)
            else:
                queued = (store.request(job.id) or {}).get("disk_ids", [])
                disk_ids = journal.disk_ids(queued)
                leftovers = Leftovers(engine, job.vm_id, disk_ids, objects, job.manager, store)
                mode_for(job.mode).cleanup(leftovers)
                journal.clear()
    except DroverError as error:
        return Reaped(job.id, job.vm_name, "failed", f"{why}; cleaning failed: {error}", objects)
    return Reaped(job.id, job.vm_name, "cleaned", why, objects)
