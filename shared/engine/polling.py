"""One polling loop with a deadline for every wait on the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from shared.engine.errors import EngineTimeout

T = TypeVar("T")
INTERVAL_S = 0.2


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = INTERVAL_S,
) -> T:
    """Call `probe` until it returns something truthy; EngineTimeout after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise EngineTimeout(
                f"timed out after {timeout_s:.0f}s waiting for {what}",
                hint="the engine may be overloaded; retry later",
            )
        time.sleep(interval_s)
