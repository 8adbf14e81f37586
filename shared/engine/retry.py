"""Riding out engine outages: each EngineClient call is retried here, or nowhere.

Which call kinds retry on which errors is documented in `shared.engine.errors`; in short,
only `EngineTransient` errors, and a CREATE only when the request never reached the engine.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from shared.engine.errors import EngineTransient, EngineUnavailable, translated
from shared.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class CallKind(enum.Enum):
    LOGIN = "login"  # idempotent: a second token is harmless
    READ = "read"
    IDEMPOTENT = "idempotent"  # a change that looks at the object's state before acting
    CREATE = "create"  # a change that would be made twice if repeated after it reached


@dataclass(frozen=True)
class RetryPolicy:
    budget_s: float = 300.0  # no new attempt starts later than this after the first
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    fault_attempts: int = 3  # attempts when the engine answers with its own 500 fault
    jitter: float = 0.2  # +-20 %, so that many workers do not retry in step

    def delay(self, failures: int) -> float:
        """How long to wait after the `failures`-th failed attempt."""
        base = min(self.max_delay_s, self.first_delay_s * 2.0 ** max(0, failures - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(budget_s=0.0)  # for a caller that would rather fail at once
INTERACTIVE = RetryPolicy(budget_s=15.0)  # someone waits for the answer (API, CLI)


def may_retry(error: EngineTransient, kind: CallKind, faults: int, policy: RetryPolicy) -> bool:
    """Whether a `kind` call that failed with `error` may be tried again; `faults` counts the
    engine's own 5xx faults so far in this call, `error` included."""
    if kind is CallKind.CREATE and error.reached:
        return False  # it may have been done: doing it again could duplicate it
    if _engine_fault(error):
        return faults < policy.fault_attempts  # the engine's own 500 is often not a blip
    return True


def _engine_fault(error: EngineTransient) -> bool:
    return isinstance(error, EngineUnavailable) and error.from_engine


def _nothing() -> None:
    return None


def call(
    fn: Callable[[], T],
    *,
    action: str,
    kind: CallKind,
    policy: RetryPolicy = RETRY,
    user: str = "",
    before: Callable[[], None] = _nothing,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`fn()` with SDK errors translated (see `translated`), retried per the policy;
    `before()` (a job's fence) runs before every attempt and is never retried."""
    started = clock()
    attempt = faults = 0
    while True:
        attempt += 1
        before()
        try:
            with translated(action, user=user):
                result = fn()
            if attempt > 1:
                log.info("engine call passed after retrying", action=action, attempts=attempt)
            return result
        except EngineTransient as error:
            faults += _engine_fault(error)
            delay = policy.delay(attempt)
            elapsed = clock() - started
            if not may_retry(error, kind, faults, policy) or elapsed + delay > policy.budget_s:
                if attempt > 1:
                    error.message = f"{error.message} (gave up after {attempt} attempts)"
                    error.args = (error.message,)
                raise
            log.warning(
                "engine call failed, retrying",
                action=action,
                attempt=attempt,
                retry_in_s=round(delay, 2),
                error=str(error),
            )
            sleep(delay)
