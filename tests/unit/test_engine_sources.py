"""Extents and the imageio connection pool, without servers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.sources.extent import Extent
from shared.sources.pool import ConnectionPool


def test_extent_round_trip() -> None:
    extent = Extent(4096, 65536, zero=False, dirty=True)
    assert Extent.from_dict(extent.to_dict()) == extent
    assert extent.end == 69632 and extent.data
    assert not Extent(0, 1, zero=True, dirty=True).data
    assert not Extent(0, 1, zero=False, dirty=False).data


class FakeBackend:
    created = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        self.closed = False
        self.fail_next: BaseException | None = None
        with FakeBackend.lock:
            FakeBackend.created += 1

    def clone(self) -> FakeBackend:
        return FakeBackend()

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def reset() -> None:
    FakeBackend.created = 0


def test_at_most_limit_connections_for_many_threads() -> None:
    pool = ConnectionPool(FakeBackend(), limit=3)
    active = 0
    peak = 0
    lock = threading.Lock()

    def work(_: int) -> None:
        nonlocal active, peak

        def use(_backend: Any) -> None:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.005)
            with lock:
                active -= 1

        pool.run(use)

    with ThreadPoolExecutor(8) as executor:
        list(executor.map(work, range(40)))
    assert peak <= 3
    assert FakeBackend.created <= 4  # meta + 3 data connections, reused
    pool.close()
    assert pool.meta.closed


def test_a_broken_connection_is_replaced_and_retried_once() -> None:
    pool = ConnectionPool(FakeBackend(), limit=1)
    seen: list[Any] = []

    def flaky(backend: Any) -> str:
        seen.append(backend)
        if len(seen) == 1:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert pool.run(flaky) == "ok"
    assert seen[0].closed and seen[1] is not seen[0]

    def broken(_backend: Any) -> None:
        raise BrokenPipeError("gone")

    with pytest.raises(BrokenPipeError):
        pool.run(broken)
    assert pool.run(lambda b: "still usable") == "still usable"


def test_other_errors_are_not_retried() -> None:
    pool = ConnectionPool(FakeBackend(), limit=2)
    calls = []

    def bad(_backend: Any) -> None:
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        pool.run(bad)
    assert calls == [1]


def test_closed_pool_refuses_work() -> None:
    pool = ConnectionPool(FakeBackend(), limit=1)
    pool.close()
    with pytest.raises(ValueError, match="closed"):
        pool.run(lambda b: None)
