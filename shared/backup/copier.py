"""Copy planned chunks from a disk source into chunk storage over several connections.

Each thread owns one chunk buffer; the bytes between planned reads are zeros. A chunk
that turns out all zeros is reported with digest None and not stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from shared.backup.plan import ChunkPlan


class ReadableDisk(Protocol):
    def readinto(self, offset: int, buf: memoryview) -> int: ...


StoreChunk = Callable[[memoryview], str]
ChunkDone = Callable[[ChunkPlan, str | None], None]


class _Buffers(threading.local):
    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)


class ChunkCopier:
    def __init__(self, source: ReadableDisk, store: StoreChunk, chunk_size: int, workers: int = 4):
        self._source = source
        self._store = store
        self._zeros = bytes(chunk_size)
        self._buffers = _Buffers(chunk_size)
        self._workers = workers

    def copy(self, plans: Iterable[ChunkPlan], done: ChunkDone) -> None:
        """Copy every plan; the first error stops the copy and is raised."""
        with ThreadPoolExecutor(self._workers, thread_name_prefix="chunk") as pool:
            futures = [pool.submit(self._copy_one, plan, done) for plan in plans]
            for future in futures:
                future.result()

    def _copy_one(self, plan: ChunkPlan, done: ChunkDone) -> None:
        view = memoryview(self._buffers.buffer)[: plan.length]
        self._fill(plan, view)
        # bytes.startswith compares with memcmp; memoryview == compares item by item.
        digest = None if self._zeros.startswith(view) else self._store(view)
        done(plan, digest)

    def _fill(self, plan: ChunkPlan, view: memoryview) -> None:
        cursor = plan.start
        for span in plan.reads:
            if span.start > cursor:
                view[cursor - plan.start : span.start - plan.start] = self._zeros[
                    : span.start - cursor
                ]
            self._read_exactly(span.start, view[span.start - plan.start : span.end - plan.start])
            cursor = span.end
        if cursor < plan.start + plan.length:
            view[cursor - plan.start :] = self._zeros[: plan.start + plan.length - cursor]

    def _read_exactly(self, offset: int, view: memoryview) -> None:
        done = 0
        while done < len(view):
            n = self._source.readinto(offset + done, view[done:])
            if n <= 0:
                raise EOFError(f"the disk ended at {offset + done}, before {offset + len(view)}")
            done += n
