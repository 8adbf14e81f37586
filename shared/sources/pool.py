"""A pool of imageio connections to one transfer: one per concurrent caller, at most `limit`.

The first connection (`meta`) answers size and extents; data connections are clones of it
(no new OPTIONS or extents requests), created on demand and reused by the next caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from shared.sources.imageio_http import CONNECTION_ERRORS

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
                backend.close()
                return
            self._idle.append(backend)
            self._cond.notify()

    def _discard(self, backend: Any) -> None:
        backend.close()
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for backend in idle:
            backend.close()
        with self._meta_lock:
            self.meta.close()
