"""Cleanup never replaces the first error (as in ovirt-imageio's backends): when a block fails,
errors raised while closing connections are logged and the block's own error is the one seen.
Fake backends, no servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from shared.engine.models import TransferInfo
from shared.sources import imageio, imageio_http
from shared.sources.imageio import ImageioSink, ImageioSource
from shared.sources.pool import ConnectionPool
from tests.unit.recording_log import RecordingLog


class CloseError(RuntimeError):
    """What a fake backend's close() raises."""


class FakeBackend:
    """A connection whose close() can be made to fail; its clones fail the same way."""

    def __init__(self, *, close_fails: bool = False, max_readers: int = 8) -> None:
        self.close_fails = close_fails
        self.max_readers = max_readers
        self.max_writers = max_readers
        self.close_calls = 0
        self.clones: list[FakeBackend] = []

    def clone(self) -> FakeBackend:
        clone = FakeBackend(close_fails=self.close_fails)
        self.clones.append(clone)
        return clone

    def close(self) -> None:
        self.close_calls += 1
        if self.close_fails:
            raise CloseError(f"close failed ({id(self)})")


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(imageio_http, "log", recorder)
    return recorder


def transfer_info() -> TransferInfo:
    return TransferInfo(
        id="t1",
        phase="transferring",
        transfer_url="https://host:54322/images/ticket",
        proxy_url="https://engine:54323/images/ticket",
        host_id="h1",
    )


def open_with(monkeypatch: pytest.MonkeyPatch, meta: Any) -> None:
    def fake_open_transfer(
        transfer_url: str | None, proxy_url: str | None, ca_file: str | None, *, secure: bool
    ) -> tuple[Any, str]:
        assert transfer_url is not None
        return meta, transfer_url

    monkeypatch.setattr(imageio, "open_transfer", fake_open_transfer)


# 1. ConnectionPool.run: discarding a broken connection


def test_run_keeps_the_error_when_discarding_the_connection_fails(log: RecordingLog) -> None:
    pool = ConnectionPool(FakeBackend(close_fails=True), limit=1)

    def bad(_backend: Any) -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        pool.run(bad)
    assert any(fields.get("error", "").startswith("close failed") for _, _, fields in log.records)


def test_run_keeps_the_connection_error_when_discarding_fails(log: RecordingLog) -> None:
    pool = ConnectionPool(FakeBackend(close_fails=True), limit=1)
    calls = 0

    def broken(_backend: Any) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionResetError(f"reset by peer #{calls}")

    with pytest.raises(ConnectionResetError, match="reset by peer #2"):
        pool.run(broken)
    assert calls == 2  # still retried once on a new connection
    assert all(clone.close_calls == 1 for clone in pool.meta.clones)


def test_a_failed_discard_frees_the_connection_slot(log: RecordingLog) -> None:
    pool = ConnectionPool(FakeBackend(close_fails=True), limit=1)

    def bad(_backend: Any) -> None:
        raise ValueError("bad request")

    with pytest.raises((ValueError, CloseError)):  # which one is the test above
        pool.run(bad)
    results: list[object] = []

    def next_call() -> None:
        try:
            results.append(pool.run(lambda b: "ok"))
        except Exception as e:  # the pool closed under a stuck waiter
            results.append(e)

    waiter = threading.Thread(target=next_call, daemon=True)
    waiter.start()
    waiter.join(timeout=5)
    stuck = waiter.is_alive()
    if stuck:  # wake it up so it does not linger
        pool.meta.close_fails = False
        pool.close()
        waiter.join(timeout=5)
    assert not stuck, "the next caller waited forever for the discarded connection's slot"
    assert results == ["ok"]


def test_a_connection_released_after_close_keeps_the_result(log: RecordingLog) -> None:
    pool = ConnectionPool(FakeBackend(close_fails=True), limit=1)

    def closing_meanwhile(_backend: Any) -> str:
        pool.meta.close_fails = False
        pool.close()  # another thread closes the pool while this call works
        return "read"

    assert pool.run(closing_meanwhile) == "read"
    assert pool.meta.clones[0].close_calls == 1


# 2. ConnectionPool.close


def test_close_closes_every_connection_and_raises_the_first_error(log: RecordingLog) -> None:
    meta = FakeBackend()
    pool = ConnectionPool(meta, limit=3)
    started = threading.Barrier(3)

    def use(_backend: Any) -> None:
        started.wait(timeout=5)  # three calls at once: three idle connections afterwards

    threads = [threading.Thread(target=pool.run, args=(use,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    first, second, third = meta.clones
    first.close_fails = second.close_fails = True
    meta.close_fails = True
    with pytest.raises(CloseError) as raised:
        pool.close()
    assert all(b.close_calls == 1 for b in (first, second, third, meta))
    errors = {str(raised.value)} | {fields.get("error") for _, _, fields in log.records}
    assert {f"close failed ({id(b)})" for b in (first, second, meta)} <= errors


def test_close_closes_meta_when_a_data_connection_fails(log: RecordingLog) -> None:
    meta = FakeBackend()
    pool = ConnectionPool(meta, limit=1)
    pool.run(lambda b: None)
    meta.clones[0].close_fails = True
    with pytest.raises(CloseError):
        pool.close()
    assert meta.close_calls == 1


# 3. _Transfer.__exit__


@pytest.mark.parametrize("cls", [ImageioSource, ImageioSink])
def test_exit_keeps_the_body_error_when_close_fails(
    monkeypatch: pytest.MonkeyPatch, log: RecordingLog, cls: type[ImageioSource]
) -> None:
    open_with(monkeypatch, FakeBackend(close_fails=True))
    with pytest.raises(KeyError, match="from the body"), cls(transfer_info(), None):
        raise KeyError("from the body")
    assert log.records, "the close error is logged"


def test_exit_raises_the_close_error_when_the_body_succeeded(
    monkeypatch: pytest.MonkeyPatch, log: RecordingLog
) -> None:
    open_with(monkeypatch, FakeBackend(close_fails=True))
    with pytest.raises(CloseError), ImageioSource(transfer_info(), None):
        pass


# 4. _Transfer.__init__


class ExplodingLimits(FakeBackend):
    @property
    def max_readers(self) -> int:
        raise ConnectionResetError("OPTIONS answer lost")

    @max_readers.setter
    def max_readers(self, _value: int) -> None:
        pass


def test_init_closes_the_metadata_connection_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    meta = ExplodingLimits()
    open_with(monkeypatch, meta)
    with pytest.raises(ConnectionResetError, match="OPTIONS answer lost"):
        ImageioSource(transfer_info(), None)
    assert meta.close_calls == 1


def test_init_keeps_its_error_when_closing_the_metadata_connection_fails(
    monkeypatch: pytest.MonkeyPatch, log: RecordingLog
) -> None:
    meta = FakeBackend(close_fails=True)
    open_with(monkeypatch, meta)

    def no_pool(*_args: Any) -> None:
        raise MemoryError("no pool today")

    monkeypatch.setattr(imageio, "ConnectionPool", no_pool)
    with pytest.raises(MemoryError, match="no pool today"):
        ImageioSource(transfer_info(), None)
    assert meta.close_calls == 1
    assert log.records, "the close error is logged"
