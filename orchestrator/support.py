"""What this version of Drover can carry out of a policy; the rest is refused, not ignored.

The policy model (`orchestrator.policies`) describes features that have not landed yet: the
disk_attachment mode and S3 repositories. A stored policy that
uses them still loads (the model accepts them), but `refuse_unsupported` stops it from being
applied or run, with one message naming every such feature and what to do instead, so that a
policy never silently does something other than what it says. Repository URLs other than
`file://` and `s3://` are refused too: no backend stores backups there.

Each feature lifts its own refusal when it lands: a mode by moving from
`shared.modes.PLANNED_MODES` to `AVAILABLE_MODES`, the others by deleting their check below
(schedules have: `drover beat` runs them; retention has: `finalize` and `drover repo prune`
apply it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from orchestrator.policies import Policy
from shared.errors import ConfigError
from shared.modes import AVAILABLE_MODES, PLANNED_MODES

AUTO = "auto"  # always allowed: it picks an available mode


@dataclass(frozen=True)
class Gap:
    """One thing a policy asks for that this version cannot do, and what to do instead."""

    problem: str
    hint: str


def refuse_unsupported(policy: Policy) -> None:
    """A ConfigError naming every unsupported feature the policy uses; nothing when none."""
    gaps = unsupported(policy)
    if gaps:
        raise ConfigError(
            f"policy {policy.name!r}: " + "; ".join(gap.problem for gap in gaps),
            hint="; ".join(gap.hint for gap in gaps),
        )


def unsupported(policy: Policy) -> list[Gap]:
    """The policy's gaps, in the order the checks run (mode, repository)."""
    found = (check(policy) for check in CHECKS)
    return [gap for gap in found if gap is not None]


def usable_modes() -> tuple[str, ...]:
    return (*AVAILABLE_MODES, AUTO)


def _mode(policy: Policy) -> Gap | None:
    usable = usable_modes()
    if policy.mode in usable:
        return None
    what = (
        "is not available in this version of Drover"
        if policy.mode in PLANNED_MODES
        else "is not a mode this version of Drover knows"
    )
    return Gap(
        f"mode {policy.mode} {what} (available: {', '.join(usable)})",
        f"use mode {' or '.join(usable)}",
    )


def _repository(policy: Policy) -> Gap | None:
    location = policy.repository  # empty: the settings' repository
    if "://" not in location:
        return None
    scheme = urlparse(location).scheme
    if scheme == "file":
        return None
    if scheme == "s3":
        return Gap(
            f"repository {location}: S3 repositories are not supported yet",
            "use a filesystem path (a mounted S3 bucket, for example)",
        )
    return Gap(
        f"repository {location}: {scheme}:// repositories are not supported",
        "use a filesystem path",
    )


CHECKS: tuple[Callable[[Policy], Gap | None], ...] = (_mode, _repository)
