"""What the engine client retries, how often, and what its errors say (fakes for the SDK)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from shared.engine import client as client_module
from shared.engine import retry
from shared.engine.client import EngineClient
from shared.engine.errors import (
    EngineAuthError,
    EngineConflict,
    EngineNameInUse,
    EngineNotFound,
    EngineTlsError,
    EngineTransient,
    EngineUnavailable,
    EngineUnreachable,
    SsoUnavailable,
    translate,
)
from shared.engine.retry import CallKind, RetryPolicy
from shared.errors import DroverError, ServiceError
from shared.settings import EngineSettings
from tests.unit.recording_log import RecordingLog

READ, IDEMPOTENT, CREATE = CallKind.READ, CallKind.IDEMPOTENT, CallKind.CREATE
POLICY = RetryPolicy(budget_s=60.0, first_delay_s=1.0, max_delay_s=8.0, jitter=0.0)


def http_error(code: int, detail: str | None = None) -> sdk.Error:
    """What the SDK raises for an HTTP error: with the engine's fault when `detail` is given."""
    fault = types.Fault(reason="Operation Failed", detail=detail) if detail is not None else None
    cls = sdk.NotFoundError if code == 404 else sdk.Error
    return cls(f"HTTP response code is {code}.", code, fault)


PROXY_503 = http_error(503)  # what our connection raises for a proxy's error page
ENGINE_500 = http_error(500, "[Internal Engine Error]")
REFUSED = sdk.Error(
    "Failed to read response: [(<pycurl.Curl object at 0x7f>, 7, "
    "'Failed to connect to engine port 443: Connection refused')]"
)
RESET = sdk.Error("Failed to read response: [(<pycurl.Curl object at 0x7f>, 56, 'reset')]")


# translation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "cls", "reached"),
    [
        (PROXY_503, EngineUnavailable, False),
        (http_error(502), EngineUnavailable, True),
        (http_error(504), EngineUnavailable, True),
        (ENGINE_500, EngineUnavailable, True),
        (SsoUnavailable("logging in failed: content type 'text/html'"), EngineUnavailable, False),
        (REFUSED, EngineUnreachable, False),
        (sdk.ConnectionError("Error while sending HTTP request: (6, 'no host')"), None, False),
        (sdk.Error("Error while sending HTTP request: (35, 'SSL_ERROR_SYSCALL')"), None, False),
        (sdk.TimeoutError("Error while sending HTTP request: (28, 'timed out')"), None, True),
        (RESET, EngineUnreachable, True),
        (OSError("broken pipe"), EngineUnreachable, True),
    ],
)
def test_transient_errors_say_whether_the_request_may_have_arrived(
    error: BaseException, cls: type[EngineTransient] | None, reached: bool
) -> None:
    translated = translate(error, "reading VM v1")
    assert isinstance(translated, cls or EngineUnreachable)
    assert isinstance(translated, ServiceError) and translated.retryable
    assert translated.reached is reached
    assert "while reading VM v1" in str(translated)


def test_the_engines_own_500_and_a_proxys_503_read_differently() -> None:
    engine = translate(ENGINE_500, "finalizing image transfer t1")
    assert isinstance(engine, EngineUnavailable) and engine.from_engine and engine.code == 500
    assert str(engine).startswith(
        "the engine failed while finalizing image transfer t1 (HTTP 500): Internal Engine Error"
    )
    proxy = translate(PROXY_503, "logging in")
    assert isinstance(proxy, EngineUnavailable) and not proxy.from_engine
    assert "the engine is unavailable while logging in (HTTP 503" in str(proxy)
    assert "restarting" in proxy.hint


def test_curl_list_errors_read_without_the_curl_object() -> None:
    message = str(translate(REFUSED))
    assert "pycurl.Curl" not in message
    assert "Connection refused (curl error 7)" in message


@pytest.mark.parametrize(
    "error",
    [
        sdk.Error("Error while sending HTTP request: (60, 'SSL certificate problem')"),
        sdk.Error("Failed to read response: [(<pycurl.Curl object>, 60, 'SSL certificate')]"),
        sdk.Error("Error while sending HTTP request: (35, 'certificate verify failed')"),
    ],
)
def test_certificate_problems_are_not_transient(error: sdk.Error) -> None:
    assert isinstance(translate(error), EngineTlsError)


def test_a_name_in_use_is_a_conflict_no_retry_fixes() -> None:
    error = translate(
        http_error(409, "[Cannot add VM. The given name is already in use.]"),
        "creating VM web01 from its OVF",
    )
    assert isinstance(error, EngineNameInUse) and error.code == 409
    assert not error.retryable and not isinstance(error, ServiceError | EngineConflict)
    assert str(error) == (
        "the name is already in use while creating VM web01 from its OVF: "
        "Cannot add VM. The given name is already in use. "
        "(choose another name (e.g. restore --name), or remove the existing object)"
    )
    assert error.reason == "Cannot add VM. The given name is already in use."


def test_an_existing_id_is_not_called_a_name() -> None:
    error = translate(http_error(409, "[Cannot add Virtual Disk. Disk d1 already exists.]"))
    assert isinstance(error, EngineNameInUse)
    assert str(error).startswith("it already exists: Cannot add Virtual Disk.")


@pytest.mark.parametrize(
    "detail",
    [
        "[Cannot backup VM. Disk d1 is locked.]",
        "[Cannot transfer image. Disk web01_disk0 is being transferred.]",
        "[Cannot remove VM checkpoint. The VM is during a backup operation.]",
        "[Cannot remove VM. Related operation is currently in progress. Please try again later.]",
    ],
)
def test_locked_objects_are_retryable_conflicts(detail: str) -> None:
    error = translate(http_error(409, detail), "starting a backup of VM v1")
    assert isinstance(error, EngineConflict) and error.retryable
    assert str(error).startswith("the object is busy while starting a backup of VM v1: ")
    assert error.hint == "retry later"


def test_other_conflicts_say_the_state_is_the_problem() -> None:
    error = translate(http_error(409, "[Cannot remove VM. VM is running.]"), "removing VM v1")
    assert isinstance(error, EngineConflict)
    assert "refused while removing VM v1 in the object's current state" in str(error)
    assert "locked" not in str(error)


def test_an_answer_that_is_not_the_api_is_not_transient() -> None:
    error = translate(sdk.Error("The response content type 'text/html' isn't the expected XML"))
    assert not isinstance(error, EngineTransient) and not error.retryable
    assert "check engine.url" in str(error)


def test_sso_refusals_stay_auth_errors() -> None:
    error = translate(sdk.AuthError("Error during SSO authentication access_denied : no"))
    assert isinstance(error, EngineAuthError) and not error.retryable


# the retry loop --------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(retry, "log", recorder)
    return recorder


def failing(*errors: BaseException, result: str = "ok") -> Callable[[], str]:
    """A call that raises `errors` one by one, then returns `result`; counts its calls."""
    queue = iter(errors)

    def fn() -> str:
        fn.calls += 1  # type: ignore[attr-defined]
        error = next(queue, None)
        if error is not None:
            raise error
        return result

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def run(fn: Callable[[], str], kind: CallKind, clock: Clock, **kwargs: Any) -> str:
    return retry.call(
        fn,
        action="doing it",
        kind=kind,
        policy=kwargs.pop("policy", POLICY),
        sleep=clock.sleep,
        clock=clock,
        **kwargs,
    )


def test_reads_ride_out_an_outage_with_backoff_and_log_each_retry(
    clock: Clock, log: RecordingLog
) -> None:
    fn = failing(PROXY_503, REFUSED, RESET, http_error(502), PROXY_503)
    assert run(fn, READ, clock) == "ok"
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert log.events("warning") == ["engine call failed, retrying"] * 5
    first = log.records[0][2]
    assert first["action"] == "doing it" and first["attempt"] == 1 and "HTTP 503" in first["error"]
    assert log.events("info") == ["engine call passed after retrying"]


@pytest.mark.parametrize("kind", [CallKind.LOGIN, READ, IDEMPOTENT])
def test_calls_safe_to_repeat_retry_every_transient_error(kind: CallKind, clock: Clock) -> None:
    fn = failing(ENGINE_500, RESET, sdk.TimeoutError("(28, 'timed out')"))
    assert run(fn, kind, clock) == "ok"
    assert fn.calls == 4  # type: ignore[attr-defined]


def test_creates_are_resent_only_when_they_never_arrived(clock: Clock) -> None:
    never_arrived = failing(PROXY_503, REFUSED, SsoUnavailable("login: text/html"))
    assert run(never_arrived, CREATE, clock) == "ok"
    for maybe_done in (ENGINE_500, http_error(502), RESET, sdk.TimeoutError("(28, 'x')")):
        fn = failing(maybe_done)
        with pytest.raises(EngineTransient) as raised:
            run(fn, CREATE, clock)
        assert fn.calls == 1 and raised.value.retryable  # type: ignore[attr-defined]
        assert "gave up" not in str(raised.value)


def test_the_engines_own_500_is_tried_a_few_times_only(clock: Clock) -> None:
    fn = failing(*[ENGINE_500] * 5)
    with pytest.raises(EngineUnavailable, match="gave up after 3 attempts"):
        run(fn, READ, clock)
    assert fn.calls == 3  # type: ignore[attr-defined]


def test_retrying_stops_at_the_budget(clock: Clock, log: RecordingLog) -> None:
    fn = failing(*[PROXY_503] * 100)
    with pytest.raises(EngineUnavailable) as raised:
        run(fn, READ, clock)
    assert clock.now <= POLICY.budget_s
    assert fn.calls == 10  # type: ignore[attr-defined] # 1+2+4+8+8+8+8+8+8 = 55 s, +8 > 60
    assert "gave up after 10 attempts" in str(raised.value)
    assert raised.value.retryable  # the job step may still retry later


@pytest.mark.parametrize(
    "error",
    [
        http_error(404, "Entity not found: v1"),
        http_error(409, "[Disk d1 is locked.]"),
        http_error(400, "[bad]"),
        sdk.AuthError("401", 401),
        sdk.Error("Error while sending HTTP request: (60, 'SSL certificate problem')"),
        ValueError("a bug"),
    ],
)
def test_what_is_not_transient_is_never_retried(error: BaseException, clock: Clock) -> None:
    fn = failing(error)
    with pytest.raises((DroverError, ValueError)):
        run(fn, READ, clock)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []


def test_the_guard_runs_before_every_attempt_and_is_not_retried(clock: Clock) -> None:
    checks: list[int] = []
    fn = failing(PROXY_503, PROXY_503)
    run(fn, IDEMPOTENT, clock, before=lambda: checks.append(1))
    assert len(checks) == 3

    def fenced() -> None:
        raise DroverError("the job lost its VM")

    fn = failing(PROXY_503)
    with pytest.raises(DroverError, match="lost its VM"):
        run(fn, IDEMPOTENT, clock, before=fenced)
    assert fn.calls == 0  # type: ignore[attr-defined]


def test_delays_double_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(first_delay_s=0.5, max_delay_s=10.0, jitter=0.2)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (30, 10.0)]:
        delay = policy.delay(failures)
        assert base * 0.8 <= delay <= base * 1.2


# the client: each call kind, and starts that must not duplicate ---------------------------
class FakeBackups:
    """A VM's backups service: `add` creates the backup, and may then fail as if its answer
    had been lost (a 500 after the engine acted)."""

    def __init__(self) -> None:
        self.backups: dict[str, Any] = {}
        self.adds = 0
        self.fail_after_adding: list[BaseException] = []

    def add(self, spec: Any) -> Any:
        self.adds += 1
        backup = types.Backup(
            id=spec.id or f"b{self.adds}", phase=types.BackupPhase.READY, disks=spec.disks
        )
        self.backups[backup.id] = backup
        if self.fail_after_adding:
            raise self.fail_after_adding.pop(0)
        return backup

    def backup_service(self, backup_id: str) -> Any:
        def get() -> Any:
            if backup_id not in self.backups:
                raise http_error(404, f"Entity not found: {backup_id}")
            return self.backups[backup_id]

        return SimpleNamespace(get=get)


class FakeTransfers:
    def __init__(self) -> None:
        self.adds = 0
        self.get_errors: list[BaseException] = []

    def add(self, spec: Any) -> Any:
        self.adds += 1
        return types.ImageTransfer(id=f"t{self.adds}", phase=types.ImageTransferPhase.INITIALIZING)

    def image_transfer_service(self, transfer_id: str) -> Any:
        def get() -> Any:
            if self.get_errors:
                raise self.get_errors.pop(0)
            return types.ImageTransfer(
                id=transfer_id,
                phase=types.ImageTransferPhase.TRANSFERRING,
                transfer_url="https://host:54322/images/x",
            )

        return SimpleNamespace(get=get)


class FakeSystem:
    def __init__(self) -> None:
        self.backups = FakeBackups()
        self.transfers = FakeTransfers()

    def vms_service(self) -> Any:
        vm = SimpleNamespace(backups_service=lambda: self.backups)
        return SimpleNamespace(vm_service=lambda vm_id: vm)

    def image_transfers_service(self) -> Any:
        return self.transfers


class FakeConnection:
    def __init__(self, login_errors: list[BaseException] | None = None) -> None:
        self.system = FakeSystem()
        self.login_errors = list(login_errors or [])
        self.url = "https://engine/ovirt-engine/api"
        self.logins = 0
        self.closed = False

    def system_service(self) -> FakeSystem:
        return self.system

    def authenticate(self) -> str:
        self.logins += 1
        if self.login_errors:
            raise self.login_errors.pop(0)
        return "token"

    def close(self, logout: bool = True) -> None:
        self.closed = True


FAST = RetryPolicy(budget_s=5.0, first_delay_s=0.0, max_delay_s=0.0)


@pytest.fixture
def engine() -> Iterator[tuple[EngineClient, FakeSystem]]:
    connection = FakeConnection()
    yield EngineClient(connection, retry=FAST), connection.system


def test_a_backup_with_our_id_is_found_not_added_twice(
    engine: tuple[EngineClient, FakeSystem],
) -> None:
    client, system = engine
    system.backups.fail_after_adding = [ENGINE_500]  # added, but the answer was a 500
    backup = client.start_backup("vm1", ["d1"], backup_id="b-ours", timeout_s=5)
    assert backup.id == "b-ours" and backup.phase == "ready"
    assert system.backups.adds == 1 and list(system.backups.backups) == ["b-ours"]


def test_a_backup_without_an_id_is_not_added_twice(
    engine: tuple[EngineClient, FakeSystem],
) -> None:
    client, system = engine
    system.backups.fail_after_adding = [ENGINE_500]
    with pytest.raises(EngineUnavailable):
        client.start_backup("vm1", ["d1"], timeout_s=5)
    assert system.backups.adds == 1


def test_a_failed_wait_does_not_add_the_transfer_again(
    engine: tuple[EngineClient, FakeSystem],
) -> None:
    client, system = engine
    system.transfers.get_errors = [PROXY_503, RESET, ENGINE_500]
    transfer = client.start_transfer(disk_id="d1", timeout_s=5)
    assert transfer.id == "t1" and transfer.phase == "transferring"
    assert system.transfers.adds == 1


def test_changes_are_guarded_on_every_attempt_reads_never(
    engine: tuple[EngineClient, FakeSystem],
) -> None:
    client, system = engine
    checks = itertools.count()
    client._guard = lambda: next(checks) and None
    system.transfers.get_errors = [PROXY_503]
    assert client.transfer("t9") is not None  # a read: no guard
    assert next(checks) == 0
    system.backups.backups["b1"] = types.Backup(id="b1", phase=types.BackupPhase.SUCCEEDED)
    client.finalize_backup("vm1", "b1", timeout_s=5)  # a change: guarded once, it passed
    assert next(checks) == 2


def test_logging_in_rides_out_the_sso_being_down(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = FakeConnection([SsoUnavailable("text/html"), PROXY_503, REFUSED])
    monkeypatch.setattr(client_module, "open_connection", lambda settings: connection)
    settings = EngineSettings(url=connection.url, username="u@internal", password="pw")
    client = EngineClient.connect(settings, retry=FAST)
    assert connection.logins == 4 and client.url == connection.url


def test_logging_in_gives_up_on_wrong_credentials_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = FakeConnection([sdk.AuthError("Error during SSO authentication", 401)])
    monkeypatch.setattr(client_module, "open_connection", lambda settings: connection)
    settings = EngineSettings(url=connection.url, username="u@internal", password="pw")
    with pytest.raises(EngineAuthError, match="user u@internal"):
        EngineClient.connect(settings, retry=FAST)
    assert connection.logins == 1 and connection.closed


def test_not_found_is_not_retried_by_the_client(engine: tuple[EngineClient, FakeSystem]) -> None:
    client, system = engine
    system.transfers.get_errors = [http_error(404, "Entity not found: t1")]
    assert client.transfer("t1") is None  # the module's own answer for "gone"
    system.transfers.get_errors = [http_error(409, "[locked]")]
    with pytest.raises(EngineConflict):
        client.transfer("t1")
    with pytest.raises(EngineNotFound):
        raise translate(http_error(404, "gone"))
