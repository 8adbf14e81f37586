"""One step of one backup job: what it was asked, where it writes, how it reaches the engine.

A step loads the job's request from Redis (messages carry only ids) and talks to the engine
through a client whose guard is the job's fencing check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.backup.context import JobContext
from shared.backup.journal import JobJournal
from shared.engine.client import EngineClient, Guard
from shared.errors import DroverError
from shared.jobs import BackupRequest
from shared.repository.repository import Repository
from shared.state import StateStore

ConnectEngine = Callable[[str, Guard], EngineClient]
OpenRepository = Callable[[str], Repository]


class JobStateLost(DroverError):
    """Redis lost what earlier steps recorded (a flushed or replaced Redis)."""


@dataclass(frozen=True)
class JobStep:
    request: BackupRequest
    journal: JobJournal
    connect: ConnectEngine
    open_repository: OpenRepository

    @classmethod
    def load(
        cls, store: StateStore, job_id: str, connect: ConnectEngine, open_repo: OpenRepository
    ) -> JobStep:
        data, job = store.request(job_id), store.job(job_id)
        if data is None or job is None:
            raise JobStateLost(
                f"job {job_id} has no request in Redis",
                hint="Redis lost the job's state; run the policy again",
            )
        request = BackupRequest.from_dict(data)
        journal = JobJournal(store, job_id, request.vm_id, job.fence)
        return cls(request, journal, connect, open_repo)

    @property
    def store(self) -> StateStore:
        return self.journal.store

    def engine(self) -> EngineClient:
        return self.connect(self.request.manager, self.journal.check_fence)

    def repository(self) -> Repository:
        return self.open_repository(self.request.repository)

    def context(self) -> JobContext:
        data = self.store.context(self.request.job_id)
        if data is None:
            raise JobStateLost(
                f"job {self.request.job_id} has no saved context in Redis",
                hint="Redis lost the job's state; run the policy again",
            )
        return JobContext.from_dict(data, self.request)
