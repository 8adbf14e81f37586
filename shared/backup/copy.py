"""The one copy routine of backup and restore, after ovirt-imageio's `client/_io.py`.

`copy_chunks` feeds chunk plans through a bounded queue to a few worker threads; each worker
reads one chunk (`ChunkReader`) into its own buffer and writes it (`ChunkWriter`). Backup
reads a disk and writes the repository; restore reads the repository and writes a disk. The
first error stops the copy: no new chunk starts, the running ones end, and that error (not a
later one) is raised.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import Protocol

from shared.backup.plan import ChunkPlan

QUEUE_DEPTH_PER_WORKER = 2


class ChunkReader(Protocol):
    def read_chunk(self, plan: ChunkPlan, buffer: memoryview) -> memoryview | None:
        """The chunk's bytes (in `buffer` or elsewhere), or None when it is all zeros."""
        ...


class ChunkWriter(Protocol):
    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        """Store the chunk's bytes; None: the chunk is all zeros."""
        ...


class _FirstError:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def keep(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.stopped.set()


def copy_chunks(
    plans: Iterable[ChunkPlan],
    reader: ChunkReader,
    writer: ChunkWriter,
    *,
    workers: int,
    buffer_size: int,
) -> None:
    """Copy every plan with `workers` threads; raise the first error once all have stopped."""
    work: queue.Queue[ChunkPlan | None] = queue.Queue(workers * QUEUE_DEPTH_PER_WORKER)
    failure = _FirstError()
    threads = [
        threading.Thread(
            target=_work,
            args=(work, reader, writer, buffer_size, failure),
            name=f"drover-copy-{n}",
            daemon=True,
        )
        for n in range(max(1, workers))
    ]
    for thread in threads:
        thread.start()
    try:
        _feed(plans, work, failure)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    if failure.error is not None:
        raise failure.error


def _feed(
    plans: Iterable[ChunkPlan], work: queue.Queue[ChunkPlan | None], failure: _FirstError
) -> None:
    for plan in plans:
        if failure.stopped.is_set():
            return
        work.put(plan)


def _work(
    work: queue.Queue[ChunkPlan | None],
    reader: ChunkReader,
    writer: ChunkWriter,
    buffer_size: int,
    failure: _FirstError,
) -> None:
    buffer = memoryview(bytearray(buffer_size))
    while (plan := work.get()) is not None:
        if failure.stopped.is_set():
            continue  # drain what was queued before the failure
        try:
            writer.write_chunk(plan, reader.read_chunk(plan, buffer[: plan.length]))
        except BaseException as error:  # handed to the caller's thread
            failure.keep(error)
