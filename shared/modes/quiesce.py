"""Quiescing around a snapshot or engine backup: freeze the guest's filesystems, thaw after.

Tried first whenever the policy asks for it; when the engine says there is no guest agent,
the job goes on crash-consistent and says so in its warnings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.engine.client import EngineClient
from shared.engine.errors import NoGuestAgent
from shared.errors import DroverError
from shared.logging import get_logger
from shared.modes.base import JobRun

NO_AGENT_WARNING = "snapshot taken without quiescing: no guest agent"
FROZEN = "frozen"  # the journal entry cleanup thaws from
log = get_logger(__name__)


@contextmanager
def quiesced(run: JobRun) -> Iterator[None]:
    frozen = _freeze(run)
    try:
        yield
    except BaseException:
        if frozen:
            _thaw_quietly(run)
        raise
    if frozen:
        _thaw(run)


def _freeze(run: JobRun) -> bool:
    if not run.context.request.quiesce:
        return False
    run.journal.record(FROZEN, "yes")
    try:
        run.engine.freeze(run.context.vm_id)
    except NoGuestAgent:
        run.journal.record(FROZEN, "")
        run.journal.warn(NO_AGENT_WARNING)
        return False
    return True


def _thaw(run: JobRun) -> None:
    run.engine.thaw(run.context.vm_id)
    run.journal.record(FROZEN, "")


def _thaw_quietly(run: JobRun) -> None:
    """After a failure: the failure is what the job reports; cleanup thaws again if needed."""
    try:
        _thaw(run)
    except Exception as error:
        log.warning("could not thaw after a failure", error=str(error))


def thaw_left_frozen(run: JobRun) -> None:
    """Thaw a guest that an earlier attempt of the step froze and did not thaw."""
    if run.journal.recorded(FROZEN):
        _thaw(run)


def thaw_quietly(engine: EngineClient, vm_id: str) -> None:
    """Cleanup's thaw: a VM that is not frozen (any more) refuses it, which is fine."""
    try:
        engine.thaw(vm_id)
    except DroverError as error:
        log.warning("thawing during cleanup failed", vm_id=vm_id, error=str(error))
