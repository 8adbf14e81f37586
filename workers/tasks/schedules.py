"""The task a fired schedule slot runs: the policy, once per (policy, slot).

`drover beat` (workers.beat) sends it to the control queue with the slot; it runs the policy
through the orchestrator's `Service.run_policy`, as `drover policy run` does, after claiming the
slot (shared.schedules.runs), and records the outcome.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import shared_task

from shared.schedules.runs import run_slot
from shared.settings import get_settings
from workers.beat import DEFAULT_GRACE_S, RUN_SCHEDULED
from workers.resources import state_store


@lru_cache(maxsize=1)
def _service() -> Any:
    from orchestrator.service import build_service

    return build_service(get_settings())


def _schedule_of(policy: str) -> dict[str, Any] | None:
    document = state_store().document("policy", policy)
    schedule = (document or {}).get("schedule")
    return dict(schedule) if schedule else None


@shared_task(name=RUN_SCHEDULED)
def run_scheduled(policy: str, slot: str, grace_s: float = DEFAULT_GRACE_S) -> dict[str, Any]:
    return run_slot(
        state_store(),
        policy,
        slot,
        lambda name: _service().run_policy(name),
        _schedule_of,
        grace_s,
    )
