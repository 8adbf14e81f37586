"""Upkeep the scheduler runs: the reaper (shared.reaper)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from shared.reaper import reap
from workers.resources import connect_engine, state_store

REAP = "drover.maintenance.reap"


@shared_task(name=REAP)
def reap_leftovers(dry_run: bool = False) -> dict[str, Any]:
    return reap(state_store(), connect_engine, dry_run=dry_run).to_dict()
