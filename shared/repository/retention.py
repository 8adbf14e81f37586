"""Which backups of one VM a retention policy keeps: last N plus daily/weekly/monthly (GFS).

The rules, as restic's `forget` and Proxmox's prune apply them, with days, ISO weeks and months
in UTC (the time zone of every manifest's `created_at`):
- `keep_last` N: the N newest backups;
- `keep_daily` N: the newest backup of each of the N newest days that have a backup;
- `keep_weekly` / `keep_monthly` N: the same per ISO week / per calendar month.
A backup kept by any rule is kept; with no rule set every backup is kept (retention off).

Dependencies are kept too: a backup that a kept incremental names as its parent (and so on up
its chain) is kept, whatever the rules say. Every manifest holds its full chunk map, so a
child would still restore without its parent; the chain is kept because the backup rhythm
(`choose_kind`'s "every N-th backup is full") walks it, and a running job's incremental reads
its parent's manifest when it commits. The chain is at most `full_every` backups long, so this
costs little. Backups named in `protected` (the parents of running jobs) are kept as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import ConfigError
from shared.repository.manifest import BackupSummary

RULES = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")


@dataclass(frozen=True)
class RetentionRules:
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None

    def __post_init__(self) -> None:
        for name in RULES:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"retention {name} must be at least 1, not {value!r}")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) is not None for name in RULES)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RetentionRules:
        """From a policy's `retention` document (unknown keys are ignored here: the policy
        model already refused them)."""
        data = data or {}
        return cls(**{name: data.get(name) for name in RULES})

    def to_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in RULES}


@dataclass
class Selection:
    """Per backup id, why it is kept; and the ids to remove, oldest first."""

    keep: dict[str, list[str]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)


def select(
    backups: Iterable[BackupSummary],
    rules: RetentionRules,
    protected: Iterable[str] = (),
) -> Selection:
    """Apply `rules` to the backups of one VM (the caller groups by VM)."""
    ordered = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    keep: dict[str, list[str]] = {}

    def mark(backup_id: str, reason: str) -> None:
        keep.setdefault(backup_id, []).append(reason)

    if not rules.enabled:
        for backup in ordered:
            mark(backup.backup_id, "no retention rule")
    if rules.keep_last:
        for backup in ordered[: rules.keep_last]:
            mark(backup.backup_id, "last")
    for name, count, bucket in (
        ("daily", rules.keep_daily, _day),
        ("weekly", rules.keep_weekly, _week),
        ("monthly", rules.keep_monthly, _month),
    ):
        if not count:
            continue
        seen: set[str] = set()
        for backup in ordered:  # newest first: the first of a bucket is its newest backup
            key = bucket(_time(backup))
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(key)
            mark(backup.backup_id, f"{name} {key}")
    by_id = {b.backup_id: b for b in ordered}
    for backup_id in protected:
        if backup_id in by_id:
            mark(backup_id, "a running job's parent")
    _keep_parents(by_id, keep)
    remove = [b.backup_id for b in reversed(ordered) if b.backup_id not in keep]
    return Selection(keep, remove)


def dependants(backups: Iterable[BackupSummary], backup_id: str) -> list[str]:
    """The backups that name `backup_id` as their parent."""
    return sorted(b.backup_id for b in backups if b.parent_id == backup_id)


def _keep_parents(by_id: dict[str, BackupSummary], keep: dict[str, list[str]]) -> None:
    for child_id in list(keep):
        child = by_id[child_id]
        while child.parent_id and child.parent_id in by_id:
            reasons = keep.setdefault(child.parent_id, [])
            reason = f"parent of {child.backup_id}"
            if reason in reasons:
                break
            reasons.append(reason)
            child = by_id[child.parent_id]


def _time(backup: BackupSummary) -> datetime:
    try:
        moment = datetime.fromisoformat(backup.created_at)
    except ValueError as exc:
        raise ConfigError(
            f"backup {backup.backup_id} has an unreadable creation time "
            f"{backup.created_at!r}",
            hint="run `drover repo check`; retention leaves this VM's backups alone meanwhile",
        ) from exc
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return moment.strftime("%Y-%m")
