"""A pool of imageio connections to one transfer: one per concurrent caller, at most `limit`.

The first connection (`meta`) answers size and extents; data connections are clones of it
(no new OPTIONS or extents requests), created on demand and reused by the next caller.

Closing never hides an error: a connection discarded after a failed call, or released after
the pool was closed, is closed quietly (a close error is logged; the call's own error, or its
result, is what the caller gets). `close()` closes every connection even when some fail, then
raises the first failure (the others are logged).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from shared.sources.imageio_http import CONNECTION_ERRORS, close_quietly

T = TypeVar("T")


class ConnectionPool:
    def __init__(self, meta: Any, limit: int) -> None:
        self.meta = meta
        self.limit = max(1, limit)
        self._idle: list[Any] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()
        self._meta_lock = threading.Lock()

    def with_meta(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(meta)` alone on the metadata connection."""
        with self._meta_lock:
            return fn(self.meta)

    def run(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(connection)`; a connection that broke is replaced and the call retried once."""
        for attempt in (1, 2):
            backend = self._acquire()
            try:
                result = fn(backend)
            except CONNECTION_ERRORS:
                self._discard(backend)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self._discard(backend)
                raise
            self._release(backend)
            return result
        raise AssertionError("unreachable")

    def _acquire(self) -> Any:
        with self._cond:
            while True:
                if self._closed:
                    raise ValueError("the imageio connections are closed")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.limit:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            with self._meta_lock:
                return self.meta.clone()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, backend: Any) -> None:
        with self._cond:
            if self._closed:
                # the call succeeded: its result matters more than this connection's close
                close_quietly(backend, "an imageio connection released after close")
                return
            self._idle.append(backend)
            self._cond.notify()

    def _discard(self, backend: Any) -> None:
        """Drop a connection after a failed call: the call's error is the one raised."""
        try:
            close_quietly(backend, "a failed imageio connection")
        finally:  # the slot is freed whatever happens, or the next caller waits forever
            with self._cond:
                self._count -= 1
                self._cond.notify()

    def close(self) -> None:
        """Close every connection; raise the first close error once all were tried."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        first: Exception | None = None
        for backend in idle:
            first = _close_keeping_first(backend, "an imageio data connection", first)
        with self._meta_lock:
            first = _close_keeping_first(self.meta, "the imageio metadata connection", first)
        if first is not None:
            raise first


def _close_keeping_first(obj: Any, what: str, first: Exception | None) -> Exception | None:
    """Close `obj`; return the first close error so far (the later ones are logged)."""
    if first is not None:
        close_quietly(obj, what)
        return first
    try:
        obj.close()
    except Exception as e:
        return e
    return None
