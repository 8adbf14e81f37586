"""Fakes for the orchestrator's unit tests: an in-memory StateStore, engine and repository.

The integration tests run the same service against real Redis, the lab's engine and Celery.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr

from orchestrator.api import create_app
from orchestrator.auth import TokenAuth
from orchestrator.service import Service
from shared.engine.models import DiskInfo, EngineVersion, HostInfo, StorageDomainInfo, VmInfo
from shared.jobs import BackupRequest, RestoreRequest
from shared.settings import EngineSettings, Settings
from shared.state import FailOutcome, JobState, JobStatus, VmLocked

with warnings.catch_warnings():  # starlette would rather have httpx2, which is not installed
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "unit-test-token-0123456789"
PASSWORD = "engine-s3cret-pw"
ENGINE_URL = "https://engine.example/ovirt-engine/api"
ENGINE_VERSION = EngineVersion(4, 5)
SECRET_KEY = Fernet.generate_key()  # seals the host credentials the tests register


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    """Logs go nowhere: an earlier test may have left structlog writing to a closed stream."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


class FakeRedis:
    def ping(self) -> bool:
        return True


class FakeState:
    """The parts of StateStore the orchestrator uses, in dicts."""

    def __init__(self) -> None:
        self.redis = FakeRedis()
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.job_states: dict[str, JobState] = {}
        self.locks: dict[str, str] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.job_queues: dict[str, list[str]] = {}
        self.job_tasks: dict[str, set[str]] = {}
        self.fences: dict[str, int] = {}  # VM id -> the fencing token of its lock
        self.workers: list[str] = []

    def put_document(self, kind: str, name: str, document: dict[str, Any]) -> None:
        self.docs[(kind, name)] = copy.deepcopy(document)

    def document(self, kind: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.docs.get((kind, name)))

    def documents(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(d) for (k, _), d in sorted(self.docs.items()) if k == kind]

    def remove_document(self, kind: str, name: str) -> bool:
        return self.docs.pop((kind, name), None) is not None

    def create_job(self, job: JobState) -> None:
        self.job_states[job.id] = copy.deepcopy(job)

    def job(self, job_id: str) -> JobState | None:
        return copy.deepcopy(self.job_states.get(job_id))

    def context(self, job_id: str) -> dict[str, Any] | None:
        return None

    def save_request(self, job_id: str, request: dict[str, Any]) -> None:
        self.requests[job_id] = copy.deepcopy(request)

    def jobs(self, limit: int = 100) -> list[JobState]:
        jobs = sorted(self.job_states.values(), key=lambda j: j.created_at, reverse=True)
        return [copy.deepcopy(j) for j in jobs[:limit]]

    def set_status(self, job_id: str, status: JobStatus, error: str = "") -> None:
        self.job_states[job_id].status = status
        self.job_states[job_id].error = error

    def save_queues(self, job_id: str, queues: list[str]) -> None:
        self.job_queues[job_id] = list(queues)

    def queues(self, job_id: str) -> list[str]:
        return list(self.job_queues.get(job_id, []))

    def record_task(self, job_id: str, *task_ids: str) -> None:
        self.job_tasks.setdefault(job_id, set()).update(t for t in task_ids if t)

    def tasks(self, job_id: str) -> list[str]:
        return sorted(self.job_tasks.get(job_id, set()))

    def request_cancel(self, job_id: str) -> bool:
        job = self.job_states.get(job_id)
        if job is None or job.status.finished:
            return False
        job.status = JobStatus.CANCELLING
        return True

    def fail_once(self, job_id: str, reason: str) -> FailOutcome:
        job = self.job_states[job_id]
        if job.status == JobStatus.FAILED:
            return FailOutcome.ALREADY_FAILED
        if job.status.finished:
            return FailOutcome.ALREADY_SUCCEEDED
        job.status, job.error = JobStatus.FAILED, reason
        return FailOutcome.FAILED_NOW

    def add_warning(self, job_id: str, warning: str) -> None:
        self.job_states[job_id].warnings.append(warning)

    def engine_objects(self, job_id: str) -> dict[str, str]:
        return dict(self.job_states[job_id].engine_objects)

    def live_workers(self) -> list[str]:
        return list(self.workers)

    def lock_vm(self, vm_id: str, job_id: str) -> int:
        if self.locks.get(vm_id, job_id) != job_id:
            raise VmLocked(f"VM {vm_id} is being backed up by job {self.locks[vm_id]}")
        self.locks[vm_id] = job_id
        self.fences[vm_id] = self.fences.get(vm_id, 0) + 1
        return self.fences[vm_id]

    def refence_vm(self, vm_id: str, job_id: str) -> int:
        if self.locks.get(vm_id) != job_id:
            return 0
        self.fences[vm_id] += 1
        return self.fences[vm_id]

    def vm_lock_holder(self, vm_id: str) -> str:
        return self.locks.get(vm_id, "")

    def unlock_vm(self, vm_id: str, job_id: str) -> None:
        if self.locks.get(vm_id) == job_id:
            del self.locks[vm_id]


def disk(disk_id: str, name: str, size: int = 1 << 30) -> DiskInfo:
    return DiskInfo(
        id=disk_id, name=name, size=size, format="cow", storage_domain_id="sd1",
        image_id=f"img-{disk_id}", backup="incremental",
    )  # fmt: skip


def vm(vm_id: str, name: str, cluster: str = "cluster1", tags: list[str] | None = None) -> VmInfo:
    disks = [disk(f"{vm_id}-d0", f"{name}_os"), disk(f"{vm_id}-d1", "scratch")]
    return VmInfo(
        id=vm_id, name=name, cluster_id=f"id-{cluster}", cluster_name=cluster, status="up",
        disks=disks, tags=tags or [],
    )  # fmt: skip


def host(name: str, cluster: str = "cluster1", status: str = "up") -> HostInfo:
    return HostInfo(f"id-{name}", name, f"{name}.example", f"id-{cluster}", status)


@dataclass
class FakeEngine:
    vms: list[VmInfo] = field(default_factory=list)
    error: Exception | None = None
    connected: list[EngineSettings] = field(default_factory=list)
    searches: list[tuple[list[str], ...]] = field(default_factory=list)
    host_list: list[HostInfo] = field(
        default_factory=lambda: [host("host1"), host("host2", cluster="cluster2")]
    )
    engine_version: EngineVersion = ENGINE_VERSION
    version_reads: int = 0
    domain_reads: int = 0

    def connect(self, settings: EngineSettings) -> FakeEngine:
        self.connected.append(settings)
        if self.error:
            raise self.error
        return self

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def test(self) -> str:
        return "oVirt Engine 4.5.5"

    def version(self) -> EngineVersion:
        self.version_reads += 1
        return self.engine_version

    def storage_domains(self) -> list[StorageDomainInfo]:
        self.domain_reads += 1
        return [StorageDomainInfo("sd1", "data1", "nfs")]

    def hosts(self) -> list[HostInfo]:
        return list(self.host_list)

    def find_vms(
        self, names: list[str], patterns: list[str], tags: list[str], clusters: list[str]
    ) -> list[VmInfo]:
        self.searches.append((names, patterns, tags, clusters))
        return list(self.vms)


@dataclass
class FakeSubmit:
    backups: list[tuple[BackupRequest, list[str], str]] = field(default_factory=list)
    restores: list[RestoreRequest] = field(default_factory=list)
    error: Exception | None = None

    def backup(self, request: BackupRequest, queue: str) -> None:
        """Records (request, its disks, its queue)."""
        if self.error:
            raise self.error
        self.backups.append((request, list(request.disk_ids), queue))

    def restore(self, request: RestoreRequest, queue: str) -> None:
        self.restores.append(request)


@dataclass
class FakeRepository:
    summaries: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)

    def open(self, location: str) -> FakeRepository:
        self.opened.append(location)
        return self

    def list_backups(self) -> list[dict[str, Any]]:
        return self.summaries


@dataclass
class World:
    state: FakeState
    engine: FakeEngine
    submit: FakeSubmit
    repository: FakeRepository
    service: Service


def make_world(tmp_repository: str = "memory://repo") -> World:
    state, engine, submit, repo = FakeState(), FakeEngine(), FakeSubmit(), FakeRepository()
    settings = Settings(
        repository=tmp_repository,
        api_tokens=[SecretStr(TOKEN)],
        secret_key=SecretStr(SECRET_KEY.decode()),
    )
    service = Service(
        state=state,  # type: ignore[arg-type]
        settings=settings,
        connect=engine.connect,
        submit_backup=submit.backup,
        submit_restore=submit.restore,
        open_repository=repo.open,
        live_queues=lambda: {"drover.default", "transfer.image", "transfer.ssh"},
    )
    return World(state, engine, submit, repo, service)


def make_api(world: World, *, auth: bool = True) -> FastAPI:
    return create_app(world.service, TokenAuth([SecretStr(TOKEN)], enabled=auth))


def api_client(world: World) -> TestClient:
    client = TestClient(make_api(world), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def manager_body(**changes: Any) -> dict[str, Any]:
    body = {"name": "lab", "url": ENGINE_URL, "username": "admin@internal", "password": PASSWORD}
    return body | changes


def policy_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "nightly",
        "manager": "lab",
        "vms": {"patterns": ["*"]},
        "mode": "image_transfer",
        "exclude_disks": ["scratch"],
        "priority": 7,
    }
    return body | changes
