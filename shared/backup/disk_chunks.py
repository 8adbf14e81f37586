"""Chunks of a disk, read from a disk source or written to a disk sink, for `copy_chunks`."""

from __future__ import annotations

from typing import Protocol

from shared.backup.plan import ChunkPlan
from shared.repository.chunks import is_zero


class Readable(Protocol):
    def readinto(self, offset: int, buf: bytearray | memoryview) -> int: ...


class Writable(Protocol):
    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def zero(self, offset: int, length: int) -> None: ...


class DiskChunkReader:
    """Reads a plan's ranges from a disk; the bytes between them are zeros."""

    def __init__(self, source: Readable) -> None:
        self._source = source

    def read_chunk(self, plan: ChunkPlan, buffer: memoryview) -> memoryview | None:
        cursor = 0
        for span in plan.reads:
            start, end = span.start - plan.start, span.end - plan.start
            _zero(buffer[cursor:start])
            read_exactly(self._source, span.start, buffer[start:end])
            cursor = end
        _zero(buffer[cursor:])
        return None if is_zero(buffer) else buffer


def read_exactly(source: Readable, offset: int, view: memoryview) -> None:
    """Fill `view` from `offset`; EOFError when the source ends first."""
    done = 0
    while done < len(view):
        n = source.readinto(offset + done, view[done:])
        if n <= 0:
            raise EOFError(f"the disk ended at {offset + done}, before {offset + len(view)}")
        done += n


def _zero(view: memoryview) -> None:
    view[:] = bytes(len(view))


class DiskChunkWriter:
    """Writes chunks to a disk; zero chunks are written as zeros only where the disk may hold
    stale bytes (a preallocated disk), and skipped otherwise."""

    def __init__(self, sink: Writable, *, zero_fill: bool) -> None:
        self._sink = sink
        self._zero_fill = zero_fill

    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        if data is not None:
            self._sink.write(plan.start, data)
        elif self._zero_fill:
            self._sink.zero(plan.start, plan.length)
