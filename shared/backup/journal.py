"""What one job writes down while it works, and the fence that stops a stale step.

The journal is the job's record in Redis (`shared.state`): engine objects, recorded before
they are created; warnings; and, for a backup, the fencing token of its VM lock, checked
before every engine mutation (`EngineClient`'s guard) and before the backup is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.state import StateStore


class Recorder(Protocol):
    """What records a job's engine objects: a backup's journal or a restore's."""

    def record(self, name: str, value: str) -> None: ...

    def objects(self) -> dict[str, str]: ...


class JobJournal:
    def __init__(self, store: StateStore, job_id: str, vm_id: str, fence: int) -> None:
        self.store = store
        self.job_id = job_id
        self.vm_id = vm_id
        self.fence = fence

    def record(self, name: str, value: str) -> None:
        self.store.record_engine_object(self.job_id, name, value)

    def recorded(self, name: str) -> str:
        return self.objects().get(name, "")

    def objects(self) -> dict[str, str]:
        return self.store.engine_objects(self.job_id)

    def disk_ids(self, queued: Sequence[str]) -> list[str]:
        """The job's disks: as prepare decided them, else as they were queued."""
        context = self.store.context(self.job_id) or {}
        return [d["id"] for d in context.get("disks", [])] or list(queued)

    def clear(self) -> None:
        """The job is done with its engine objects (committed, or cleaned up after a failure):
        nothing is left for the reaper."""
        for name in self.objects():
            self.record(name, "")

    def warn(self, text: str) -> None:
        self.store.add_warning(self.job_id, text)

    def warnings(self) -> list[str]:
        return self.store.warnings(self.job_id)

    def check_fence(self) -> None:
        """LostVmLock when the job no longer holds its VM with its own token."""
        self.store.check_vm_lock(self.vm_id, self.job_id, self.fence)

    def renew_lock(self) -> None:
        self.store.renew_vm_lock(self.vm_id, self.job_id)
