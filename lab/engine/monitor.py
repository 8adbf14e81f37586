"""The engine's periodic work: transfer inactivity and clean-up of finished entities."""

from __future__ import annotations

from lab.engine import backups, transfers
from lab.engine.context import Engine


def tick(engine: Engine) -> None:
    transfers.poll(engine)
    backups.poll(engine)


def start(engine: Engine) -> None:
    engine.tasks.every(engine.timings.monitor_interval, lambda: tick(engine), "engine-monitor")
