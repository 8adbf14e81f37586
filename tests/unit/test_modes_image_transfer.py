"""The image transfer mode with a fake engine, a fake journal and fake imageio connections.

What is checked: a failing block's error is the one seen even when cancelling its transfer
fails too; an engine backup id is recorded before the backup is started; a re-delivered
begin takes up (or replaces) the backup an earlier attempt recorded; quiescing is recorded
before the freeze and a failed start still thaws; a broken checkpoint chain falls back to a
full backup. No servers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, cast

import pytest

from shared.backup.context import DiskRef, JobContext
from shared.backup.journal import JobJournal
from shared.engine.client import EngineClient
from shared.engine.errors import (
    CheckpointInvalid,
    EngineConflict,
    EngineError,
    EngineUnreachable,
    NoGuestAgent,
)
from shared.engine.models import BackupInfo, EngineVersion, TransferInfo
from shared.jobs import BackupRequest
from shared.modes import image_transfer, quiesce
from shared.modes.base import DiskPlace, JobRun, Leftovers, Started
from shared.modes.image_transfer import BACKUP, ImageTransferMode, finalized_or_cancelled
from shared.modes.quiesce import FROZEN, NO_AGENT_WARNING
from shared.state import StateStore
from tests.unit.recording_log import RecordingLog

VM = "vm-1"
DISKS = ("disk-1", "disk-2")


class BodyError(RuntimeError):
    """What the block under test raises."""


class CancelError(RuntimeError):
    """What the fake engine's cancel_transfer raises."""


class Events:
    """One ordered list of what the journal and the engine were asked, to check the order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, ...]] = []

    def add(self, *item: str) -> None:
        self.items.append(item)

    def names(self) -> list[str]:
        return [item[0] for item in self.items]

    def index(self, *item: str) -> int:
        return self.items.index(item)


class FakeJournal:
    """The parts of JobJournal a mode uses, in memory."""

    def __init__(self, events: Events, objects: dict[str, str] | None = None) -> None:
        self.events = events
        self._objects: dict[str, str] = dict(objects or {})
        self._warnings: list[str] = []
        self.fence_checks = 0
        self.renewals = 0

    def record(self, name: str, value: str) -> None:
        self.events.add("record", name, value)
        self._objects[name] = value

    def recorded(self, name: str) -> str:
        return self._objects.get(name, "")

    def objects(self) -> dict[str, str]:
        return dict(self._objects)

    def warn(self, text: str) -> None:
        self.events.add("warn", text)
        self._warnings.append(text)

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def check_fence(self) -> None:
        self.fence_checks += 1

    def renew_lock(self) -> None:
        self.renewals += 1


class FakeEngine:
    """The engine calls the image transfer mode makes; each can be told to fail."""

    ca_file = "/etc/pki/engine-ca.pem"

    def __init__(self, events: Events) -> None:
        self.events = events
        self.backups: dict[str, BackupInfo] = {}
        self.start_backup_errors: list[Exception] = []  # raised by the next calls, in order
        self.freeze_error: Exception | None = None
        self.thaw_error: Exception | None = None
        self.cancel_error: Exception | None = None
        self.cleanup_error: Exception | None = None
        self.start_backup_calls: list[tuple[str, tuple[str, ...], str | None, str | None]] = []
        self.transfers_started: list[tuple[str, str | None, str]] = []
        self.finalized: list[str] = []
        self.cancelled: list[str] = []

    # guest
    def freeze(self, vm_id: str) -> None:
        self.events.add("freeze", vm_id)
        if self.freeze_error is not None:
            raise self.freeze_error

    def thaw(self, vm_id: str) -> None:
        self.events.add("thaw", vm_id)
        if self.thaw_error is not None:
            raise self.thaw_error

    # backups
    def backup(self, vm_id: str, backup_id: str) -> BackupInfo | None:
        return self.backups.get(backup_id)

    def start_backup(
        self,
        vm_id: str,
        disk_ids: list[str],
        from_checkpoint_id: str | None = None,
        timeout_s: float = 0.0,
        *,
        backup_id: str | None = None,
    ) -> BackupInfo:
        self.events.add("start_backup", str(backup_id), str(from_checkpoint_id))
        self.start_backup_calls.append((vm_id, tuple(disk_ids), from_checkpoint_id, backup_id))
        if self.start_backup_errors:
            raise self.start_backup_errors.pop(0)
        assert backup_id is not None
        info = BackupInfo(
            id=backup_id,
            phase="ready",
            to_checkpoint_id=f"cp-{backup_id}",
            from_checkpoint_id=from_checkpoint_id,
            disk_ids=tuple(disk_ids),
        )
        self.backups[backup_id] = info
        return info

    # image transfers
    def version(self) -> EngineVersion:
        return EngineVersion(4, 5)

    def start_transfer(
        self,
        *,
        disk_id: str,
        backup_id: str | None = None,
        direction: str = "download",
        snapshot_id: str | None = None,
        fmt: str = "raw",
    ) -> TransferInfo:
        self.transfers_started.append((disk_id, backup_id, direction))
        return TransferInfo(
            id=f"transfer-{len(self.transfers_started)}",
            phase="transferring",
            transfer_url="https://host:54322/images/ticket",
            proxy_url="https://engine:54323/images/ticket",
            host_id="host-1",
            disk_id=disk_id,
            backup_id=backup_id,
            direction=direction,
        )

    def finalize_transfer(self, transfer_id: str, timeout_s: float = 0.0) -> None:
        self.events.add("finalize_transfer", transfer_id)
        self.finalized.append(transfer_id)

    def cancel_transfer(self, transfer_id: str, wait_s: float = 0.0) -> None:
        self.events.add("cancel_transfer", transfer_id)
        self.cancelled.append(transfer_id)
        if self.cancel_error is not None:
            raise self.cancel_error

    # cleanup
    def cleanup_vm(self, vm_id: str, disk_ids: list[str] | None = None) -> None:
        self.events.add("cleanup_vm", vm_id, ",".join(disk_ids or []))
        if self.cleanup_error is not None:
            raise self.cleanup_error


class FakeConnection:
    """Stands in for ImageioSink and ImageioSource: a context manager that records its use."""

    instances: list[FakeConnection] = []
    fail_on_open: Exception | None = None

    def __init__(
        self, transfer: TransferInfo, ca_file: str | None, *, max_connections: int = 4
    ) -> None:
        if FakeConnection.fail_on_open is not None:
            raise FakeConnection.fail_on_open
        self.transfer = transfer
        self.ca_file = ca_file
        self.max_connections = max_connections
        self.calls: list[tuple[str, int, int]] = []
        self.exit_error: type[BaseException] | None = None
        self.closed = False
        FakeConnection.instances.append(self)

    @property
    def connections(self) -> int:
        return self.max_connections

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", offset, len(data)))

    def zero(self, offset: int, length: int) -> None:
        self.calls.append(("zero", offset, length))

    def flush(self) -> None:
        self.calls.append(("flush", 0, 0))

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        self.calls.append(("readinto", offset, len(buf)))
        return len(buf)

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exit_error = exc_type
        self.closed = True


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def engine(events: Events) -> FakeEngine:
    return FakeEngine(events)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(image_transfer, "log", recorder)
    monkeypatch.setattr(quiesce, "log", recorder)
    return recorder


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeConnection]]:
    FakeConnection.instances = []
    FakeConnection.fail_on_open = None
    monkeypatch.setattr(image_transfer, "ImageioSink", FakeConnection)
    monkeypatch.setattr(image_transfer, "ImageioSource", FakeConnection)
    yield FakeConnection.instances
    FakeConnection.instances = []
    FakeConnection.fail_on_open = None


def as_engine(engine: FakeEngine) -> EngineClient:
    return cast(EngineClient, engine)


def make_run(
    engine: FakeEngine,
    journal: FakeJournal,
    *,
    quiesce: bool = False,
    kind: str = "full",
    from_anchor: str | None = None,
) -> JobRun:
    request = BackupRequest(
        job_id="job-1",
        policy="nightly",
        manager="engine-1",
        vm_id=VM,
        vm_name="web-1",
        repository="/srv/repo",
        disk_ids=DISKS,
        quiesce=quiesce,
    )
    disks = tuple(
        DiskRef(id=d, name=d, size=1 << 20, format="cow", incremental=kind == "incremental")
        for d in DISKS
    )
    context = JobContext(
        request=request,
        vm_name="web-1",
        cluster="cluster-1",
        chunk_size=1 << 16,
        disks=disks,
        kind=kind,
        parent_id="parent-backup" if kind == "incremental" else None,
        from_anchor=from_anchor,
    )
    return JobRun(context, as_engine(engine), cast(JobJournal, journal))


# finalized_or_cancelled ------------------------------------------------------------------


def test_a_failed_block_keeps_its_error_when_the_cancel_fails(
    engine: FakeEngine, log: RecordingLog
) -> None:
    engine.cancel_error = CancelError("engine down while cancelling")

    with (
        pytest.raises(BodyError, match="read failed"),
        finalized_or_cancelled(as_engine(engine), "t-1"),
    ):
        raise BodyError("read failed")

    assert engine.cancelled == ["t-1"]
    assert engine.finalized == []
    assert "could not cancel transfer" in log.events("warning")
    (fields,) = [f for _, e, f in log.records if e == "could not cancel transfer"]
    assert fields == {"transfer_id": "t-1", "error": "engine down while cancelling"}


def test_a_failed_block_cancels_its_transfer(engine: FakeEngine, log: RecordingLog) -> None:
    with pytest.raises(BodyError), finalized_or_cancelled(as_engine(engine), "t-1"):
        raise BodyError("read failed")

    assert engine.cancelled == ["t-1"]
    assert engine.finalized == []
    assert log.records == []


def test_a_successful_block_finalizes_and_does_not_cancel(engine: FakeEngine) -> None:
    with finalized_or_cancelled(as_engine(engine), "t-1"):
        pass

    assert engine.finalized == ["t-1"]
    assert engine.cancelled == []


def test_an_interrupted_block_is_cancelled_too(engine: FakeEngine, log: RecordingLog) -> None:
    engine.cancel_error = CancelError("cancel failed")

    with pytest.raises(KeyboardInterrupt), finalized_or_cancelled(as_engine(engine), "t-1"):
        raise KeyboardInterrupt

    assert engine.cancelled == ["t-1"]
    assert engine.finalized == []


# open_sink / open_readback ----------------------------------------------------------------


def _place(engine: Any) -> DiskPlace:
    return DiskPlace(
        as_engine(engine),
        "new-disk",
        1 << 20,
        "raw",
        "m",
        cast(StateStore, None),
        FakeJournal(Events()),
    )


def _leftovers(engine: Any, recorded: dict[str, str]) -> Leftovers:
    store = cast(StateStore, None)
    return Leftovers(as_engine(engine), VM, list(DISKS), recorded, "m", store)


def test_open_sink_writes_flushes_and_finalizes(
    engine: FakeEngine, connections: list[FakeConnection]
) -> None:
    mode = ImageTransferMode()

    with mode.open_sink(_place(engine)) as sink:
        sink.write(0, b"abcd")
        sink.zero(4, 4)

    (connection,) = connections
    assert engine.transfers_started == [("new-disk", None, "upload")]
    assert connection.transfer.id == "transfer-1"
    assert connection.ca_file == FakeEngine.ca_file
    assert connection.max_connections == image_transfer.WRITE_CONNECTIONS
    assert connection.calls == [("write", 0, 4), ("zero", 4, 4), ("flush", 0, 0)]
    assert connection.closed and connection.exit_error is None
    assert engine.finalized == ["transfer-1"]
    assert engine.cancelled == []


def test_open_sink_keeps_the_first_error_when_cancel_fails(
    engine: FakeEngine, connections: list[FakeConnection], log: RecordingLog
) -> None:
    engine.cancel_error = CancelError("cancel refused")
    mode = ImageTransferMode()

    with (
        pytest.raises(BodyError, match="repository chunk missing"),
        mode.open_sink(_place(engine)) as sink,
    ):
        sink.write(0, b"abcd")
        raise BodyError("repository chunk missing")

    (connection,) = connections
    assert ("flush", 0, 0) not in connection.calls  # nothing half-written is made durable
    assert connection.exit_error is BodyError  # closed with the block's error
    assert engine.cancelled == ["transfer-1"]
    assert engine.finalized == []
    assert "could not cancel transfer" in log.events("warning")


def test_open_sink_keeps_the_connect_error_when_cancel_fails(
    engine: FakeEngine, connections: list[FakeConnection], log: RecordingLog
) -> None:
    FakeConnection.fail_on_open = EngineUnreachable("imageio daemon not reachable")
    engine.cancel_error = CancelError("cancel refused")
    mode = ImageTransferMode()

    with (
        pytest.raises(EngineUnreachable, match="imageio daemon"),
        mode.open_sink(_place(engine)),
    ):
        pytest.fail("the block must not run")

    assert connections == []
    assert engine.cancelled == ["transfer-1"]
    assert engine.finalized == []


def test_open_readback_finalizes_after_reading(
    engine: FakeEngine, connections: list[FakeConnection]
) -> None:
    mode = ImageTransferMode()

    with mode.open_readback(_place(engine)) as source:
        buf = bytearray(8)
        assert source.readinto(0, buf) == 8

    (connection,) = connections
    assert engine.transfers_started == [("new-disk", None, "download")]
    assert connection.closed and connection.exit_error is None
    assert engine.finalized == ["transfer-1"]
    assert engine.cancelled == []


def test_open_readback_keeps_the_first_error_when_cancel_fails(
    engine: FakeEngine, connections: list[FakeConnection], log: RecordingLog
) -> None:
    engine.cancel_error = CancelError("cancel refused")
    mode = ImageTransferMode()

    with (
        pytest.raises(BodyError, match="checksum read failed"),
        mode.open_readback(_place(engine)),
    ):
        raise BodyError("checksum read failed")

    (connection,) = connections
    assert connection.exit_error is BodyError
    assert engine.cancelled == ["transfer-1"]
    assert engine.finalized == []
    assert "could not cancel transfer" in log.events("warning")


def test_start_transfer_waits_out_a_conflict(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk may still be locked by a transfer being cancelled: try again."""
    attempts: list[str] = []
    real_start = engine.start_transfer

    def locked_once(
        *,
        disk_id: str,
        backup_id: str | None = None,
        direction: str = "download",
        **_: object,
    ) -> TransferInfo:
        attempts.append(disk_id)
        if len(attempts) == 1:
            raise EngineConflict("disk is locked", hint="retry")
        return real_start(disk_id=disk_id, backup_id=backup_id, direction=direction)

    monkeypatch.setattr(engine, "start_transfer", locked_once)
    monkeypatch.setattr(time, "sleep", lambda _s: None)

    transfer = image_transfer.start_transfer(as_engine(engine), "disk-1", direction="upload")

    assert attempts == ["disk-1", "disk-1"]
    assert transfer.direction == "upload"


# begin: a backup recorded by an earlier attempt -------------------------------------------


@pytest.mark.parametrize("phase", [None, "finalizing", "succeeded", "failed"])
def test_begin_replaces_a_recorded_backup_the_engine_no_longer_serves(
    engine: FakeEngine, events: Events, phase: str | None
) -> None:
    if phase is not None:
        engine.backups["old-backup"] = BackupInfo("old-backup", phase, "cp-old", None)
    journal = FakeJournal(events, {BACKUP: "old-backup"})

    started = ImageTransferMode().begin(make_run(engine, journal))

    (call,) = engine.start_backup_calls
    new_id = call[3]
    assert new_id is not None and new_id != "old-backup"
    assert call == (VM, DISKS, None, new_id)
    assert journal.recorded(BACKUP) == new_id
    # recorded before it exists: cleanup finds it after a crash
    assert events.index("record", BACKUP, new_id) < events.index("start_backup", new_id, "None")
    (warning,) = journal.warnings()
    assert "old-backup" in warning
    assert (phase or "not found") in warning
    assert "starting a new one" in warning
    assert started == Started(new_id, f"cp-{new_id}", False)


def test_begin_reuses_a_recorded_backup_that_is_ready(engine: FakeEngine, events: Events) -> None:
    engine.backups["old-backup"] = BackupInfo("old-backup", "ready", "cp-new", "cp-parent")
    journal = FakeJournal(events, {BACKUP: "old-backup"})

    run = make_run(engine, journal, quiesce=True, kind="incremental", from_anchor="cp-parent")
    started = ImageTransferMode().begin(run)

    assert started == Started("old-backup", "cp-new", True)
    assert engine.start_backup_calls == []
    assert "freeze" not in events.names()  # the guest is not frozen a second time
    assert journal.warnings() == []
    assert journal.objects() == {BACKUP: "old-backup"}


@pytest.mark.parametrize("phase", ["initializing", "starting"])
def test_begin_refuses_a_recorded_backup_still_starting(
    engine: FakeEngine, events: Events, phase: str
) -> None:
    engine.backups["old-backup"] = BackupInfo("old-backup", phase, None, None)
    journal = FakeJournal(events, {BACKUP: "old-backup"})

    with pytest.raises(EngineConflict, match=f"still {phase}") as raised:
        ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert raised.value.retryable is True
    assert engine.start_backup_calls == []
    assert "freeze" not in events.names()
    assert journal.objects() == {BACKUP: "old-backup"}


def test_begin_without_a_recorded_backup_starts_one(engine: FakeEngine, events: Events) -> None:
    journal = FakeJournal(events)

    started = ImageTransferMode().begin(make_run(engine, journal))

    (call,) = engine.start_backup_calls
    assert call[3] is not None
    assert started == Started(call[3], f"cp-{call[3]}", False)
    assert journal.warnings() == []


def test_a_full_backup_ignores_the_parents_anchor(engine: FakeEngine, events: Events) -> None:
    journal = FakeJournal(events)

    ImageTransferMode().begin(make_run(engine, journal, kind="full", from_anchor="cp-parent"))

    (call,) = engine.start_backup_calls
    assert call[2] is None


def test_an_incremental_starts_from_the_parents_checkpoint(
    engine: FakeEngine, events: Events
) -> None:
    journal = FakeJournal(events)

    run = make_run(engine, journal, kind="incremental", from_anchor="cp-parent")
    started = ImageTransferMode().begin(run)

    (call,) = engine.start_backup_calls
    assert call[2] == "cp-parent"
    assert started.incremental is True


# begin: quiescing ------------------------------------------------------------------------


def test_begin_records_the_freeze_before_freezing_and_thaws_after(
    engine: FakeEngine, events: Events
) -> None:
    journal = FakeJournal(events)

    started = ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert events.names() == [
        "record",  # frozen = yes
        "freeze",
        "record",  # the backup id
        "start_backup",
        "thaw",
        "record",  # frozen = ""
    ]
    assert events.items[0] == ("record", FROZEN, "yes")
    assert events.items[-1] == ("record", FROZEN, "")
    assert journal.recorded(FROZEN) == ""
    assert journal.recorded(BACKUP) == started.handle


def test_begin_without_a_guest_agent_goes_on_crash_consistent(
    engine: FakeEngine, events: Events
) -> None:
    engine.freeze_error = NoGuestAgent("the guest agent is not available")
    journal = FakeJournal(events)

    started = ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert journal.warnings() == [NO_AGENT_WARNING]
    assert "thaw" not in events.names()
    assert len(engine.start_backup_calls) == 1
    assert journal.recorded(FROZEN) == ""  # nothing for cleanup to thaw
    assert events.index("record", FROZEN, "yes") < events.index("freeze", VM)
    assert started.handle == engine.start_backup_calls[0][3]


def test_begin_does_not_freeze_when_the_policy_says_so(engine: FakeEngine, events: Events) -> None:
    journal = FakeJournal(events)

    ImageTransferMode().begin(make_run(engine, journal, quiesce=False))

    assert "freeze" not in events.names()
    assert "thaw" not in events.names()
    assert FROZEN not in journal.objects()


def test_a_failed_freeze_leaves_the_record_for_cleanup(engine: FakeEngine, events: Events) -> None:
    engine.freeze_error = EngineUnreachable("the engine did not answer")
    journal = FakeJournal(events)

    with pytest.raises(EngineUnreachable):
        ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert engine.start_backup_calls == []
    assert journal.recorded(FROZEN) == "yes"  # cleanup thaws from it


def test_a_failed_start_thaws_and_keeps_its_error(
    engine: FakeEngine, events: Events, log: RecordingLog
) -> None:
    engine.start_backup_errors = [EngineError("backup refused", code=500)]
    journal = FakeJournal(events)

    with pytest.raises(EngineError, match="backup refused"):
        ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert events.names()[-2:] == ["thaw", "record"]
    assert journal.recorded(FROZEN) == ""
    assert log.records == []


def test_a_failed_start_keeps_its_error_when_the_thaw_fails_too(
    engine: FakeEngine, events: Events, log: RecordingLog
) -> None:
    engine.start_backup_errors = [EngineError("backup refused", code=500)]
    engine.thaw_error = EngineUnreachable("thaw: the engine did not answer")
    journal = FakeJournal(events)

    with pytest.raises(EngineError, match="backup refused") as raised:
        ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert not isinstance(raised.value, EngineUnreachable)
    assert "thaw" in events.names()
    assert journal.recorded(FROZEN) == "yes"  # cleanup thaws again
    assert "could not thaw after a failure" in log.events("warning")


# begin: a broken checkpoint chain ---------------------------------------------------------


def test_an_invalid_checkpoint_falls_back_to_a_full_backup(
    engine: FakeEngine, events: Events
) -> None:
    engine.start_backup_errors = [CheckpointInvalid("checkpoint cp-parent is unknown")]
    journal = FakeJournal(events)

    run = make_run(engine, journal, kind="incremental", from_anchor="cp-parent")
    started = ImageTransferMode().begin(run)

    first, second = engine.start_backup_calls
    assert first[2] == "cp-parent"
    assert second[2] is None
    assert first[3] and second[3] and first[3] != second[3]
    assert journal.recorded(BACKUP) == second[3]
    assert events.index("record", BACKUP, str(second[3])) < events.index(
        "start_backup", str(second[3]), "None"
    )
    assert journal.warnings() == []  # the pipeline says why, once, from `why_full`
    assert started.handle == str(second[3]) and not started.incremental
    assert "checkpoint chain broken" in started.why_full
    assert "checkpoint cp-parent is unknown" in started.why_full


def test_a_fallback_full_backup_that_fails_too_raises(engine: FakeEngine, events: Events) -> None:
    engine.start_backup_errors = [
        CheckpointInvalid("checkpoint cp-parent is unknown"),
        EngineError("no space left", code=500),
    ]
    journal = FakeJournal(events)

    run = make_run(engine, journal, quiesce=True, kind="incremental", from_anchor="cp-parent")
    with pytest.raises(EngineError, match="no space left"):
        ImageTransferMode().begin(run)

    assert len(engine.start_backup_calls) == 2
    assert "thaw" in events.names()


def test_a_thaw_that_fails_after_the_start_leaves_the_freeze_recorded(
    engine: FakeEngine, events: Events
) -> None:
    engine.thaw_error = EngineUnreachable("the engine did not answer")
    journal = FakeJournal(events)

    with pytest.raises(EngineUnreachable) as raised:
        ImageTransferMode().begin(make_run(engine, journal, quiesce=True))

    assert raised.value.retryable is True  # job_step retries the start
    assert journal.recorded(BACKUP) == engine.start_backup_calls[0][3]
    assert journal.recorded(FROZEN) == "yes"


def test_a_retried_begin_thaws_what_the_earlier_attempt_left_frozen(
    engine: FakeEngine, events: Events
) -> None:
    engine.thaw_error = EngineUnreachable("the engine did not answer")
    journal = FakeJournal(events)
    run = make_run(engine, journal, quiesce=True)
    with pytest.raises(EngineUnreachable):
        ImageTransferMode().begin(run)
    engine.thaw_error = None  # the engine answers again when the task is retried

    started = ImageTransferMode().begin(run)

    assert started.handle == engine.start_backup_calls[0][3]  # the ready backup is reused
    assert events.names().count("thaw") == 2
    assert journal.recorded(FROZEN) == ""


# cleanup ---------------------------------------------------------------------------------


def test_cleanup_cleans_the_vm_and_thaws_what_was_frozen(
    engine: FakeEngine, events: Events
) -> None:
    ImageTransferMode().cleanup(_leftovers(engine, {FROZEN: "yes"}))

    assert events.items == [("cleanup_vm", VM, "disk-1,disk-2"), ("thaw", VM)]


def test_cleanup_does_not_thaw_what_was_not_frozen(engine: FakeEngine, events: Events) -> None:
    ImageTransferMode().cleanup(_leftovers(engine, {FROZEN: "", BACKUP: "b"}))

    assert events.names() == ["cleanup_vm"]


def test_cleanup_ignores_a_failed_thaw(engine: FakeEngine, events: Events) -> None:
    engine.thaw_error = EngineError("the VM is not frozen", code=400)

    ImageTransferMode().cleanup(_leftovers(engine, {FROZEN: "yes"}))

    assert events.names() == ["cleanup_vm", "thaw"]


def test_cleanup_thaws_even_when_cleaning_the_vm_fails(engine: FakeEngine, events: Events) -> None:
    engine.cleanup_error = EngineError("finalizing the backup timed out", code=500)

    with pytest.raises(EngineError, match="timed out"):
        ImageTransferMode().cleanup(_leftovers(engine, {FROZEN: "yes"}))

    assert "thaw" in events.names()
