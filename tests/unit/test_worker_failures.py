"""How a job step fails (workers/failures.py), with a fake state store, engine and task.

What is checked: a retryable error retries the task instead of failing the job; any other
error fails the job, and the step's own error is what propagates even when recording the
failure fails (Redis down); cleanup on the engine happens only while the job holds its VM,
never replaces the first failure, and a sibling step's later failure becomes a warning.
No servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace, TracebackType
from typing import Any, cast

import pytest
import redis
import structlog
from celery import Task
from celery.exceptions import Retry

from shared.backup.journal import JobJournal
from shared.backup.step import JobStep
from shared.engine.client import EngineClient, Guard
from shared.engine.errors import EngineConflict, EngineError, EngineUnreachable
from shared.errors import ConfigError, ServiceError
from shared.jobs import BackupRequest
from shared.modes.quiesce import FROZEN
from shared.repository.repository import Repository
from shared.state import FailOutcome, JobState, JobStatus, StateStore
from tests.unit.recording_log import RecordingLog
from workers import failures
from workers.failures import MAX_RETRIES, RETRY_DELAY_S, fail_job, job_step

JOB = "job-1"
VM = "vm-1"
OTHER_JOB = "job-0"


class BodyError(RuntimeError):
    """An unexpected error raised by a step's body."""


class FakeStore:
    """The parts of StateStore a failing step uses; any method named in `broken` raises
    redis.ConnectionError, as it would with Redis down."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobState] = {JOB: JobState(id=JOB, vm_id=VM, status=JobStatus.RUNNING)}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, str]] = {}
        self.warnings: dict[str, list[str]] = {}
        self.lock_holder = JOB
        self.unlocked: list[tuple[str, str]] = []
        self.renewed: list[tuple[str, str]] = []
        self.broken: set[str] = set()
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.broken:
            raise redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    def job(self, job_id: str) -> JobState | None:
        self._call("job")
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return JobState(
            id=job.id,
            vm_id=job.vm_id,
            status=JobStatus(job.status),
            error=job.error,
            warnings=list(self.warnings.get(job_id, [])),
            engine_objects=dict(self.objects.get(job_id, {})),
        )

    def cancel_requested(self, job_id: str) -> bool:
        self._call("cancel_requested")
        return False

    def set_status(self, job_id: str, status: JobStatus, error: str = "") -> None:
        self._call("set_status")
        job = self.jobs[job_id]
        job.status, job.error = status, error

    def fail_once(self, job_id: str, reason: str) -> FailOutcome:
        self._call("fail_once")
        job = self.jobs[job_id]
        if job.status == JobStatus.FAILED:
            return FailOutcome.ALREADY_FAILED
        if job.status.finished:
            return FailOutcome.ALREADY_SUCCEEDED
        job.status, job.error = JobStatus.FAILED, reason
        return FailOutcome.FAILED_NOW

    def add_warning(self, job_id: str, warning: str) -> None:
        self._call("add_warning")
        self.warnings.setdefault(job_id, []).append(warning)

    def context(self, job_id: str) -> dict[str, Any] | None:
        self._call("context")
        return self.contexts.get(job_id)

    def record_engine_object(self, job_id: str, name: str, value: str) -> None:
        self._call("record_engine_object")
        self.objects.setdefault(job_id, {})[name] = value

    def engine_objects(self, job_id: str) -> dict[str, str]:
        self._call("engine_objects")
        return dict(self.objects.get(job_id, {}))

    def vm_lock_holder(self, vm_id: str) -> str:
        self._call("vm_lock_holder")
        return self.lock_holder

    def renew_vm_lock(self, vm_id: str, job_id: str, ttl_s: int = 0) -> bool:
        self._call("renew_vm_lock")
        self.renewed.append((vm_id, job_id))
        return self.lock_holder == job_id

    def check_vm_lock(self, vm_id: str, job_id: str, token: int) -> None:
        self._call("check_vm_lock")

    def unlock_vm(self, vm_id: str, job_id: str) -> None:
        self._call("unlock_vm")
        self.unlocked.append((vm_id, job_id))
        if self.lock_holder == job_id:
            self.lock_holder = ""


class FakeEngine:
    """The engine calls ImageTransferMode.cleanup makes."""

    def __init__(self) -> None:
        self.cleanup_error: Exception | None = None
        self.thaw_error: Exception | None = None
        self.cleaned: list[tuple[str, list[str]]] = []
        self.thawed: list[str] = []
        self.closed = False

    def cleanup_vm(self, vm_id: str, disk_ids: list[str] | None = None) -> None:
        self.cleaned.append((vm_id, list(disk_ids or [])))
        if self.cleanup_error is not None:
            raise self.cleanup_error

    def thaw(self, vm_id: str) -> None:
        self.thawed.append(vm_id)
        if self.thaw_error is not None:
            raise self.thaw_error

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed = True


class Connector:
    """Stands in for workers.resources.connect_engine."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.error: Exception | None = None
        self.calls: list[str] = []

    def __call__(self, manager: str, guard: Guard) -> EngineClient:
        self.calls.append(manager)
        if self.error is not None:
            raise self.error
        return cast(EngineClient, self.engine)


class FakeTask:
    """A bound Celery task: its request's retry count, and a retry() that returns a Retry."""

    def __init__(self, retries: int = 0) -> None:
        self.request = SimpleNamespace(retries=retries)
        self.retry_calls: list[dict[str, Any]] = []

    def retry(self, *, exc: Exception, countdown: int, max_retries: int) -> Retry:
        self.retry_calls.append({"exc": exc, "countdown": countdown, "max_retries": max_retries})
        return Retry(f"retry in {countdown}s", exc=exc, when=countdown)


def no_repository(location: str) -> Repository:
    raise AssertionError("a failing step does not open the repository")


@pytest.fixture(autouse=True)
def clean_log_context() -> Iterator[None]:
    """job_step binds ids to the logging context; leave none behind for other tests."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(failures, "log", recorder)
    return recorder


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def connector(engine: FakeEngine) -> Connector:
    return Connector(engine)


def make_step(store: FakeStore, connector: Connector, job_id: str = JOB) -> JobStep:
    request = BackupRequest(
        job_id=job_id,
        policy="nightly",
        manager="engine-1",
        vm_id=VM,
        vm_name="web-1",
        repository="/srv/repo",
        disk_ids=("disk-1", "disk-2"),
    )
    journal = JobJournal(cast(StateStore, store), job_id, VM, fence=7)
    return JobStep(request, journal, connector, no_repository)


@pytest.fixture
def step(store: FakeStore, connector: Connector, monkeypatch: pytest.MonkeyPatch) -> JobStep:
    built = make_step(store, connector)
    monkeypatch.setattr(failures, "_load", lambda job_id, name: built)
    return built


def as_task(task: FakeTask) -> Task:
    return cast(Task, task)


def status(store: FakeStore, job_id: str = JOB) -> tuple[str, str]:
    job = store.jobs[job_id]
    return str(job.status), job.error


# job_step --------------------------------------------------------------------------------


def test_a_successful_step_records_nothing(
    step: JobStep, store: FakeStore, engine: FakeEngine, log: RecordingLog
) -> None:
    with job_step(as_task(FakeTask()), JOB, "prepare") as loaded:
        assert loaded is step

    assert store.renewed == [(VM, JOB)]
    assert status(store) == ("running", "")
    assert engine.cleaned == []
    assert store.unlocked == []


def test_a_failed_step_cleans_up_fails_the_job_and_reraises(
    step: JobStep, store: FakeStore, engine: FakeEngine, log: RecordingLog
) -> None:
    store.objects[JOB] = {"backup": "b-1"}

    with (
        pytest.raises(ConfigError, match="disk vanished"),
        job_step(as_task(FakeTask()), JOB, "start"),
    ):
        raise ConfigError("disk vanished")

    assert engine.cleaned == [(VM, ["disk-1", "disk-2"])]
    assert status(store) == ("failed", "start: disk vanished")
    assert store.unlocked == [(VM, JOB)]
    assert "job failed" in log.events("error")


def test_an_unexpected_error_is_described_with_its_type(
    step: JobStep, store: FakeStore, log: RecordingLog
) -> None:
    with pytest.raises(BodyError), job_step(as_task(FakeTask()), JOB, "transfer"):
        raise BodyError("boom")

    assert status(store) == ("failed", "transfer: unexpected BodyError: boom")


@pytest.mark.parametrize("broken", ["fail_once", "vm_lock_holder", "unlock_vm"])
def test_the_steps_error_propagates_when_recording_the_failure_fails(
    step: JobStep, store: FakeStore, log: RecordingLog, broken: str
) -> None:
    store.broken = {broken}

    with (
        pytest.raises(ConfigError, match="bad disk format") as raised,
        job_step(as_task(FakeTask()), JOB, "prepare"),
    ):
        raise ConfigError("bad disk format")

    assert not isinstance(raised.value, redis.RedisError)
    assert broken in store.calls  # the failure was being recorded when Redis failed
    (fields,) = [f for lvl, e, f in log.records if e == "recording the failure failed"]
    assert fields["reason"] == "prepare: bad disk format"
    assert "Connection refused" in fields["error"]


def test_the_steps_error_propagates_when_redis_is_gone_entirely(
    step: JobStep, store: FakeStore, log: RecordingLog
) -> None:
    store.broken = {"vm_lock_holder", "set_status", "job", "unlock_vm", "add_warning", "context"}

    with (
        pytest.raises(BodyError, match="read failed"),
        job_step(as_task(FakeTask()), JOB, "transfer"),
    ):
        raise BodyError("read failed")

    assert "recording the failure failed" in log.events("error")


def test_a_retryable_error_retries_the_task_instead_of_failing_the_job(
    step: JobStep, store: FakeStore, engine: FakeEngine, log: RecordingLog
) -> None:
    task = FakeTask(retries=0)
    error = ServiceError("the engine did not answer")

    with pytest.raises(Retry) as raised, job_step(as_task(task), JOB, "start"):
        raise error

    assert raised.value.exc is error
    assert raised.value.__cause__ is error
    assert task.retry_calls == [
        {"exc": error, "countdown": RETRY_DELAY_S, "max_retries": MAX_RETRIES}
    ]
    assert status(store) == ("running", "")
    assert engine.cleaned == []
    assert store.unlocked == []
    assert "step failed, retrying" in log.events("warning")


def test_a_locked_engine_object_is_retried(
    step: JobStep, store: FakeStore, log: RecordingLog
) -> None:
    task = FakeTask(retries=MAX_RETRIES - 1)

    with pytest.raises(Retry), job_step(as_task(task), JOB, "transfer"):
        raise EngineConflict("disk is locked", hint="retry later")

    assert len(task.retry_calls) == 1
    assert status(store) == ("running", "")


def test_a_retryable_error_fails_the_job_once_the_retries_are_spent(
    step: JobStep, store: FakeStore, engine: FakeEngine, log: RecordingLog
) -> None:
    task = FakeTask(retries=MAX_RETRIES)

    with pytest.raises(EngineUnreachable), job_step(as_task(task), JOB, "start"):
        raise EngineUnreachable("the engine did not answer", hint="retry later")

    assert task.retry_calls == []
    assert status(store) == ("failed", "start: the engine did not answer (retry later)")
    assert engine.cleaned == [(VM, ["disk-1", "disk-2"])]


def test_a_non_retryable_error_is_not_retried(step: JobStep, store: FakeStore) -> None:
    task = FakeTask(retries=0)

    with pytest.raises(BodyError), job_step(as_task(task), JOB, "start"):
        raise BodyError("not a DroverError")

    assert task.retry_calls == []
    assert status(store)[0] == "failed"


def test_a_retry_raised_by_the_body_passes_through(
    step: JobStep, store: FakeStore, engine: FakeEngine
) -> None:
    task = FakeTask()

    with pytest.raises(Retry), job_step(as_task(task), JOB, "transfer"):
        raise Retry("asked by the body")

    assert task.retry_calls == []
    assert status(store) == ("running", "")
    assert engine.cleaned == []


# fail_job ---------------------------------------------------------------------------------


def test_fail_job_cleans_the_engine_while_the_job_holds_the_vm(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    store.contexts[JOB] = {"disks": [{"id": "disk-2"}, {"id": "disk-3"}]}
    store.objects[JOB] = {"backup": "b-1", FROZEN: "yes"}

    fail_job(make_step(store, connector), "start: backup refused")

    assert connector.calls == ["engine-1"]
    assert engine.cleaned == [(VM, ["disk-2", "disk-3"])]  # the context's disks win
    assert engine.thawed == [VM]
    assert engine.closed
    assert status(store) == ("failed", "start: backup refused")
    assert store.unlocked == [(VM, JOB)]
    assert store.warnings.get(JOB, []) == []


def test_fail_job_without_a_context_cleans_the_requested_disks(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    fail_job(make_step(store, connector), "prepare: failed")

    assert engine.cleaned == [(VM, ["disk-1", "disk-2"])]
    assert engine.thawed == []  # nothing recorded as frozen


def test_fail_job_leaves_the_engine_alone_when_another_job_holds_the_vm(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    store.lock_holder = OTHER_JOB

    fail_job(make_step(store, connector), "transfer: lost the VM")

    assert connector.calls == []
    assert engine.cleaned == []
    assert status(store) == ("failed", "transfer: lost the VM")
    assert store.unlocked == [(VM, JOB)]  # compare-and-delete: the other job keeps it
    assert store.lock_holder == OTHER_JOB


def test_fail_job_leaves_the_engine_alone_when_no_job_holds_the_vm(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    store.lock_holder = ""

    fail_job(make_step(store, connector), "finalize: failed")

    assert connector.calls == []
    assert status(store) == ("failed", "finalize: failed")


def test_a_sibling_steps_failure_becomes_a_warning(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    step = make_step(store, connector)

    fail_job(step, "transfer: disk-1 read failed")
    fail_job(step, "transfer: disk-2 read failed")

    assert status(store) == ("failed", "transfer: disk-1 read failed")
    assert store.warnings[JOB] == ["also failed: transfer: disk-2 read failed"]
    assert len(engine.cleaned) == 1  # the first failure released the VM


def test_sibling_job_steps_keep_the_first_error(
    store: FakeStore,
    connector: Connector,
    engine: FakeEngine,
    log: RecordingLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(failures, "_load", lambda job_id, name: make_step(store, connector))

    for disk in ("disk-1", "disk-2"):
        with pytest.raises(ConfigError), job_step(as_task(FakeTask()), JOB, "transfer"):
            raise ConfigError(f"{disk} has an unsupported format")

    assert status(store) == ("failed", "transfer: disk-1 has an unsupported format")
    assert store.warnings[JOB] == ["also failed: transfer: disk-2 has an unsupported format"]


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (EngineError("the engine failed (HTTP 500)", code=500), "the engine failed (HTTP 500)"),
        (RuntimeError("socket closed"), "unexpected RuntimeError: socket closed"),
    ],
)
def test_a_failed_cleanup_warns_and_keeps_the_original_reason(
    store: FakeStore,
    connector: Connector,
    engine: FakeEngine,
    log: RecordingLog,
    error: Exception,
    described: str,
) -> None:
    engine.cleanup_error = error

    fail_job(make_step(store, connector), "finalize: backup did not finish")

    assert engine.cleaned == [(VM, ["disk-1", "disk-2"])]
    assert status(store) == ("failed", "finalize: backup did not finish")
    assert store.warnings[JOB] == [f"cleanup incomplete: {described}"]
    assert store.unlocked == [(VM, JOB)]


def test_an_unreachable_engine_at_cleanup_warns_and_keeps_the_original_reason(
    store: FakeStore, connector: Connector, log: RecordingLog
) -> None:
    connector.error = EngineUnreachable("the engine did not answer", hint="retry later")

    fail_job(make_step(store, connector), "start: backup refused")

    assert status(store) == ("failed", "start: backup refused")
    assert store.warnings[JOB] == ["cleanup incomplete: the engine did not answer (retry later)"]
    assert store.unlocked == [(VM, JOB)]


def test_a_failed_cleanup_through_job_step_keeps_the_steps_error(
    step: JobStep, store: FakeStore, engine: FakeEngine, log: RecordingLog
) -> None:
    engine.cleanup_error = EngineError("cleanup refused", code=500)

    with (
        pytest.raises(BodyError, match="copy failed"),
        job_step(as_task(FakeTask()), JOB, "transfer"),
    ):
        raise BodyError("copy failed")

    assert status(store) == ("failed", "transfer: unexpected BodyError: copy failed")
    assert store.warnings[JOB] == ["cleanup incomplete: cleanup refused"]


def test_a_sibling_failing_during_the_first_cleanup_does_not_replace_the_first_error(
    store: FakeStore, connector: Connector, engine: FakeEngine, log: RecordingLog
) -> None:
    first, sibling = make_step(store, connector), make_step(store, connector)
    real_cleanup = engine.cleanup_vm
    cancelled_sibling = False

    def cleanup_vm(vm_id: str, disk_ids: list[str] | None = None) -> None:
        """Cancelling the job's transfers makes the sibling transfer step fail meanwhile."""
        nonlocal cancelled_sibling
        real_cleanup(vm_id, disk_ids)
        if not cancelled_sibling:
            cancelled_sibling = True
            fail_job(sibling, "transfer: image transfer cancelled")

    engine.cleanup_vm = cleanup_vm  # type: ignore[method-assign]

    fail_job(first, "start: backup refused")

    assert status(store) == ("failed", "start: backup refused")
    assert store.warnings[JOB] == ["also failed: transfer: image transfer cancelled"]
