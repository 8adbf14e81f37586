"""Scheduled runs: at most one per (policy, slot), each recorded for operators and tests.

    drover:schedule:slot:<policy>:<slot>   string  the claim of a slot's run (SET NX, kept
                                                   CLAIM_TTL_S): a second message for the same
                                                   slot (a beat that fired twice) finds it taken
    drover:schedule:runs:<policy>          list    JSON records of the policy's scheduled runs,
                                                   newest first, the last RUNS_KEPT

<slot> is the slot's UTC minute (2025-03-30T01:00Z, `cron.slot_id`). A record's `outcome` is
`ran` (the policy ran: its `jobs`, `vms` and `refused` as `drover policy run` gives them),
`failed` (run_policy raised: `error`), `duplicate` (the slot had run already), `late` (the
message reached a worker more than the grace period after its slot: skipped), or `unscheduled`
(the policy was removed or lost its schedule after the slot fired).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.errors import DroverError
from shared.logging import get_logger
from shared.schedules.cron import parse_slot_id
from shared.state import StateStore, key

CLAIM_TTL_S = 8 * 24 * 3600
RUNS_KEPT = 100
log = get_logger(__name__)

RunPolicy = Callable[[str], dict[str, Any]]  # Service.run_policy
ScheduleOf = Callable[[str], dict[str, Any] | None]  # the stored policy's schedule, if any


def claim_key(policy: str, slot: str) -> str:
    return key("schedule", "slot", policy, slot)


def runs_key(policy: str) -> str:
    return key("schedule", "runs", policy)


def claim(store: StateStore, policy: str, slot: str) -> bool:
    """True for the first caller of a (policy, slot), False for every later one."""
    return bool(store.redis.set(claim_key(policy, slot), _now_text(), nx=True, ex=CLAIM_TTL_S))


def record(store: StateStore, policy: str, run: dict[str, Any]) -> None:
    pipe = store.redis.pipeline()
    pipe.lpush(runs_key(policy), json.dumps(run))
    pipe.ltrim(runs_key(policy), 0, RUNS_KEPT - 1)
    pipe.execute()


def runs(store: StateStore, policy: str, limit: int = RUNS_KEPT) -> list[dict[str, Any]]:
    """The policy's scheduled runs, newest first."""
    return [json.loads(raw) for raw in store.redis.lrange(runs_key(policy), 0, limit - 1)]


def run_slot(
    store: StateStore,
    policy: str,
    slot: str,
    run_policy: RunPolicy,
    schedule_of: ScheduleOf,
    grace_s: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run `policy` for `slot` unless that slot has run, is too late, or is no longer
    scheduled; record what happened and return the record."""
    now = now or datetime.now(UTC)
    base = {"policy": policy, "slot": slot, "received_at": _text(now), "worker": _worker()}
    late_s = (now - parse_slot_id(slot)).total_seconds()
    if schedule_of(policy) is None:
        outcome = _done(base, "unscheduled", error="the policy or its schedule was removed")
    elif late_s > grace_s:
        error = f"reached a worker {late_s:.0f} s after its slot (grace {grace_s:.0f} s)"
        outcome = _done(base, "late", error=error)
    elif not claim(store, policy, slot):
        outcome = _done(base, "duplicate", error="this slot has run already")
    else:
        outcome = _run(base, policy, run_policy)
    record(store, policy, outcome)
    log.info(
        "scheduled run",
        policy=policy,
        slot=slot,
        outcome=outcome["outcome"],
        jobs=len(outcome.get("jobs", [])),
        error=outcome.get("error", ""),
    )
    return outcome


def _run(base: dict[str, Any], policy: str, run_policy: RunPolicy) -> dict[str, Any]:
    try:
        result = run_policy(policy)
    except DroverError as e:
        return _done(base, "failed", error=str(e))
    except Exception as e:  # recorded, not retried: the slot is claimed
        log.exception("scheduled run failed", policy=policy, slot=base["slot"])
        return _done(base, "failed", error=f"{type(e).__name__}: {e}")
    return _done(
        base,
        "ran",
        vms=result.get("vms", 0),
        jobs=[job["job_id"] for job in result.get("jobs", [])],
        refused=len(result.get("refused", [])),
    )


def _done(base: dict[str, Any], outcome: str, **fields: Any) -> dict[str, Any]:
    return {**base, "outcome": outcome, "finished_at": _now_text(), **fields}


def _worker() -> str:
    return socket.gethostname()


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now_text() -> str:
    return _text(datetime.fromtimestamp(time.time(), UTC))
