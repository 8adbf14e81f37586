"""Retention: GFS selection, the policy model, applying it per VM, removing one backup."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.policies import Retention
from shared.backup.retention import BackupInUse, after_commit, apply_retention, remove_backup
from shared.repository import DiskManifest, Manifest, MemoryBackend, Repository
from shared.repository.manifest import BackupSummary
from shared.repository.retention import RetentionRules, select
from shared.state import JobState, JobStatus
from tests.unit.orchestrator_fakes import FakeState

CHUNK = 4096


def summary(backup_id: str, created_at: str, parent: str | None = None) -> BackupSummary:
    kind = "incremental" if parent else "full"
    return BackupSummary(backup_id, "vm1", "web", kind, parent, "ssh", created_at, None, [])


DAYS = [  # newest last; two on 2024-05-31, one per day before
    summary("a", "2024-03-15T01:00:00Z"),
    summary("b", "2024-04-30T01:00:00Z"),
    summary("c", "2024-05-20T01:00:00Z"),
    summary("d", "2024-05-29T01:00:00Z"),
    summary("e", "2024-05-30T01:00:00Z"),
    summary("f", "2024-05-31T01:00:00Z"),
    summary("g", "2024-05-31T09:00:00Z"),
]


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        (RetentionRules(keep_last=2), {"f", "g"}),
        (RetentionRules(keep_daily=3), {"g", "e", "d"}),
        (RetentionRules(keep_weekly=2), {"g", "c"}),  # ISO weeks 22 and 21
        (RetentionRules(keep_monthly=3), {"g", "b", "a"}),
        (RetentionRules(keep_last=1, keep_monthly=2), {"g", "b"}),
        (RetentionRules(), {"a", "b", "c", "d", "e", "f", "g"}),
    ],
)
def test_gfs_rules(rules: RetentionRules, kept: set[str]) -> None:
    selection = select(DAYS, rules)
    assert set(selection.keep) == kept
    assert selection.remove == [b.backup_id for b in DAYS if b.backup_id not in kept]


def test_the_parent_chain_of_a_kept_incremental_is_kept() -> None:
    chain = [
        summary("f1", "2024-05-01T00:00:00Z"),
        summary("i1", "2024-05-02T00:00:00Z", "f1"),
        summary("i2", "2024-05-03T00:00:00Z", "i1"),
        summary("f2", "2024-05-04T00:00:00Z"),
    ]
    selection = select(chain, RetentionRules(keep_last=2))
    assert set(selection.keep) == {"f2", "i2", "i1", "f1"}
    assert selection.keep["i1"] == ["parent of i2"]
    assert select(chain[:2] + chain[3:], RetentionRules(keep_last=1)).remove == ["f1", "i1"]


def test_a_running_jobs_parent_is_kept() -> None:
    selection = select(DAYS, RetentionRules(keep_last=1), protected={"c"})
    assert set(selection.keep) == {"g", "c"}


def test_policy_model() -> None:
    rules = Retention.model_validate({"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12})
    assert rules.rules() == RetentionRules(None, 7, 4, 12)
    with pytest.raises(ValidationError, match="keep_days was replaced by keep_daily"):
        Retention.model_validate({"keep_days": 30})
    with pytest.raises(ValidationError):
        Retention.model_validate({"keep_weekly": 0})
    with pytest.raises(ValidationError):
        Retention.model_validate({"keep_yearly": 1})


# applying it -------------------------------------------------------------------------------


def backup(
    repo: Repository, state: FakeState, backup_id: str, day: int, *,
    policy: str = "nightly", vm: str = "vm1", parent: str | None = None, data: int = 0,
) -> None:  # fmt: skip
    digest = repo.put_chunk(bytes([data or day]) * CHUNK)
    disk = DiskManifest("d0", "os", CHUNK, "raw", CHUNK, {0: digest})
    repo.commit_manifest(Manifest(
        backup_id, vm, vm, "incremental" if parent else "full", parent, "ssh",
        f"2024-05-{day:02d}T00:00:00Z", "<ovf/>", None, [disk],
    ))  # fmt: skip
    state.create_job(JobState(backup_id, vm, policy=policy, status=JobStatus.SUCCEEDED))


def world(retention: dict[str, Any] | None) -> tuple[Repository, FakeState]:
    state = FakeState()
    state.put_document("policy", "nightly", {"name": "nightly", "retention": retention or {}})
    return Repository.from_backend(MemoryBackend(), chunk_size=CHUNK), state


def test_prune_keeps_what_the_policy_says_and_frees_the_rest() -> None:
    repo, state = world({"keep_last": 2})
    for day in range(1, 6):
        backup(repo, state, f"b{day}", day)
    backup(repo, state, "other", 1, policy="gone", vm="vm2")  # a removed policy: left alone
    dry = apply_retention(repo, state, dry_run=True, grace_s=-3600)
    assert [r["backup_id"] for r in dry.removed] == ["b1", "b2", "b3"]
    assert len(repo.backup_ids()) == 6
    report = apply_retention(repo, state, grace_s=-3600)  # chunks of "now" count as old
    assert repo.backup_ids() == ["b4", "b5", "other"]
    assert report.unattributed_vms == ["vm2"]
    assert report.gc is not None and report.gc["chunks_removed"] == 2  # b1 and other share data
    assert repo.check(read_data=True).ok


def test_no_retention_keeps_everything() -> None:
    repo, state = world(None)
    for day in range(1, 4):
        backup(repo, state, f"b{day}", day)
    assert not apply_retention(repo, state).removed
    assert len(repo.backup_ids()) == 3


def test_a_running_jobs_parent_is_not_forgotten() -> None:
    repo, state = world({"keep_last": 1})
    backup(repo, state, "b1", 1)
    backup(repo, state, "b2", 2)
    state.create_job(JobState("j3", "vm1", policy="nightly", status=JobStatus.RUNNING))
    state.context = lambda job_id: {"parent_id": "b1"} if job_id == "j3" else None  # type: ignore[method-assign]
    apply_retention(repo, state)
    assert repo.backup_ids() == ["b1", "b2"]


def test_remove_refuses_a_parent_and_names_its_children() -> None:
    repo, state = world(None)
    backup(repo, state, "f1", 1)
    backup(repo, state, "i1", 2, parent="f1")
    with pytest.raises(BackupInUse, match=r"parent of incremental backup.*i1"):
        remove_backup(repo, state, "f1")
    result = remove_backup(repo, state, "i1")
    assert result["removed"] and repo.backup_ids() == ["f1"]
    state.create_job(JobState("j", "vm1", status=JobStatus.RUNNING))
    state.context = lambda job_id: {"parent_id": "f1"}  # type: ignore[method-assign]
    with pytest.raises(BackupInUse, match=r"running job.*j"):
        remove_backup(repo, state, "f1")


def test_the_finalize_step_turns_a_retention_failure_into_a_warning() -> None:
    warnings: list[str] = []

    def broken() -> Repository:
        raise OSError("repository unreachable")

    step = SimpleNamespace(
        request=SimpleNamespace(job_id="j", policy="nightly", vm_name="web"),
        repository=broken,
        store=FakeState(),
        journal=SimpleNamespace(warn=warnings.append),
    )
    after_commit(step, "vm1")  # type: ignore[arg-type]
    assert len(warnings) == 1 and "retention of VM web was not applied" in warnings[0]
