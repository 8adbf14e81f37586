"""Retention as a job step and as `drover repo prune`: forget backups, then collect chunks.

Which policy a backup belongs to comes from its job's record in Redis (the backup id is the
job id). A VM's backups in one repository are judged by the rules of every policy that made
one of them (normally one): a backup kept by any of those policies' rules is kept, a policy
without retention keeps them all, and a VM none of whose backups can be attributed to an
existing policy (job records gone, policy removed) is left alone. Running jobs are read from
Redis too: their parents are kept and their chunks protected (`shared.repository.gc`).

`after_commit` runs in `finalize` right after a manifest is committed, for that VM only, and
never fails the job: what goes wrong becomes a warning on it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.backup.step import JobStep
from shared.errors import DroverError
from shared.logging import get_logger
from shared.repository.errors import BackupNotFound
from shared.repository.gc import DEFAULT_GRACE_S, ActiveWriter, collect
from shared.repository.manifest import BackupSummary
from shared.repository.repository import Repository
from shared.repository.retention import RetentionRules, Selection, dependants, select
from shared.state import StateStore

log = get_logger(__name__)

POLICY_KIND = "policy"  # the document kind policies are stored under (orchestrator.service)
MAX_JOBS_SCANNED = 10_000  # running jobs are among the newest this many job records


class BackupInUse(DroverError):
    """A backup another backup or a running job depends on."""


@dataclass
class RetentionReport:
    repository: str
    dry_run: bool = False
    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    unattributed_vms: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    gc: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def active_writers(store: StateStore) -> list[ActiveWriter]:
    """Every job that has not finished, with its parent and the chunks it stored so far."""
    writers = []
    for job in store.jobs(MAX_JOBS_SCANNED):
        if job.status.finished:
            continue
        context = store.context(job.id) or {}
        digests: set[str] = set()
        for disk in context.get("disks", ()):
            digests.update(d for d in store.stored_chunks(job.id, disk["id"]).values() if d)
        writers.append(
            ActiveWriter(job.id, job.created_at, context.get("parent_id"), frozenset(digests))
        )
    return writers


def policy_rules(store: StateStore) -> dict[str, RetentionRules]:
    """The retention rules of every stored policy, by name."""
    rules = {}
    for document in store.documents(POLICY_KIND):
        name = str(document.get("name", ""))
        rules[name] = RetentionRules.from_mapping(document.get("retention"))
    return rules


def apply_retention(
    repo: Repository,
    store: StateStore,
    *,
    vm_id: str | None = None,
    also_policy: str = "",
    dry_run: bool = False,
    gc: bool = True,
    grace_s: float = DEFAULT_GRACE_S,
) -> RetentionReport:
    """Forget what the policies' rules no longer keep (one VM's backups, or every VM's), then
    collect the chunks freed (only when something was forgotten, or always for a whole
    repository)."""
    report = RetentionReport(repo.location, dry_run=dry_run)
    rules = policy_rules(store)
    if not rules and vm_id is not None:  # after a backup: no policy keeps fewer than all
        return report
    writers = active_writers(store)
    protected = {w.parent_id for w in writers if w.parent_id}
    by_vm: dict[str, list[BackupSummary]] = defaultdict(list)
    for backup in repo.list_backups(vm_id):
        by_vm[backup.vm_id].append(backup)
    for vm, backups in sorted(by_vm.items()):
        owners = {_owner(store, b.backup_id) for b in backups} | {also_policy}
        known = [rules[name] for name in sorted(owners) if name in rules]
        if not known:
            report.unattributed_vms.append(vm)
            continue
        selection = _union([select(backups, r, protected) for r in known])
        names = {b.backup_id: b for b in backups}
        for backup_id, reasons in sorted(selection.keep.items()):
            report.kept.append(_entry(names[backup_id], reasons))
        for backup_id in selection.remove:
            entry = _entry(names[backup_id], [])
            if not dry_run:
                try:
                    repo.remove_backup(backup_id)
                except BackupNotFound:
                    continue  # removed by someone else meanwhile
                except DroverError as exc:
                    report.errors.append(f"backup {backup_id}: {exc}")
                    continue
            report.removed.append(entry)
    if gc and (report.removed or vm_id is None):
        report.gc = collect(repo, writers, grace_s=grace_s, dry_run=dry_run).to_dict()
    return report


def remove_backup(
    repo: Repository, store: StateStore, backup_id: str, *, gc: bool = True
) -> dict[str, Any]:
    """Forget one backup and collect its chunks; refused while a backup or a running job
    depends on it (named in the message)."""
    backups = repo.list_backups()
    if not any(b.backup_id == backup_id for b in backups):
        raise BackupNotFound(backup_id, repo.location)
    children = dependants(backups, backup_id)
    if children:
        raise BackupInUse(
            f"backup {backup_id} is the parent of incremental backup(s) "
            f"{', '.join(children)}",
            hint="remove those first (newest first), or let retention decide",
        )
    writers = active_writers(store)
    jobs = sorted(w.job_id for w in writers if w.parent_id == backup_id)
    if jobs:
        raise BackupInUse(
            f"backup {backup_id} is the parent of running job(s) {', '.join(jobs)}",
            hint="wait for them to finish, then remove it",
        )
    repo.remove_backup(backup_id)
    result: dict[str, Any] = {"backup_id": backup_id, "removed": True, "gc": None}
    if gc:
        result["gc"] = collect(repo, writers).to_dict()
    return result


def after_commit(step: JobStep, vm_id: str) -> None:
    """The job's retention step: its policy's rules on its VM's backups. Never raises."""
    request = step.request
    try:
        report = apply_retention(
            step.repository(), step.store, vm_id=vm_id, also_policy=request.policy
        )
    except Exception as exc:  # a retention problem must not fail a committed backup
        log.warning("retention failed", job_id=request.job_id, error=str(exc))
        step.journal.warn(
            f"retention of VM {request.vm_name} was not applied: {exc} "
            "(the backup is committed; run `drover repo prune` later)"
        )
        return
    for error in report.errors:
        step.journal.warn(f"retention: {error}")
    if report.removed:
        freed = (report.gc or {}).get("bytes_freed", 0)
        log.info(
            "retention applied",
            job_id=request.job_id,
            removed=[r["backup_id"] for r in report.removed],
            bytes_freed=freed,
        )


def _owner(store: StateStore, backup_id: str) -> str:
    job = store.job(backup_id)
    return job.policy if job is not None else ""


def _union(selections: list[Selection]) -> Selection:
    keep: dict[str, list[str]] = {}
    order: list[str] = []
    for selection in selections:
        for backup_id, reasons in selection.keep.items():
            keep.setdefault(backup_id, []).extend(reasons)
        order += [b for b in selection.remove if b not in order]
    return Selection(keep, [b for b in order if b not in keep])


def _entry(backup: BackupSummary, reasons: list[str]) -> dict[str, Any]:
    return {
        "backup_id": backup.backup_id,
        "vm_id": backup.vm_id,
        "vm_name": backup.vm_name,
        "kind": backup.kind,
        "created_at": backup.created_at,
        "reasons": reasons,
    }
