"""The one copy routine: every chunk copied, zeros reported, the first error stops it."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from shared.backup.copy import copy_chunks
from shared.backup.disk_chunks import DiskChunkReader, DiskChunkWriter
from shared.backup.plan import ChunkPlan, Span, plan_data_chunks

CHUNK = 64 * 1024


class BytesDisk:
    def __init__(self, data: bytes, max_read: int = 10_000) -> None:
        self.data = bytearray(data)
        self.max_read = max_read  # short reads, as a network source may do

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        n = min(len(buf), self.max_read, len(self.data) - offset)
        buf[:n] = self.data[offset : offset + n]
        return n

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.data[offset : offset + len(data)] = data

    def zero(self, offset: int, length: int) -> None:
        self.data[offset : offset + length] = bytes(length)


class Digests:
    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.done: dict[int, str | None] = {}
        self.lock = threading.Lock()

    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        digest = None
        if data is not None:
            digest = hashlib.sha256(data).hexdigest()
            self.stored[digest] = bytes(data)
        with self.lock:
            self.done[plan.index] = digest


def whole(index: int, length: int = CHUNK) -> ChunkPlan:
    return ChunkPlan(index, index * CHUNK, length, (Span(index * CHUNK, length),))


def test_copies_data_and_reports_zero_chunks_without_storing() -> None:
    data = bytearray(4 * CHUNK + 100)
    data[10:20] = os.urandom(10)
    data[2 * CHUNK : 3 * CHUNK] = os.urandom(CHUNK)
    plans = plan_data_chunks(
        [Span(0, 100), Span(CHUNK, CHUNK), Span(2 * CHUNK, CHUNK)], CHUNK, len(data)
    )
    sink = Digests()
    copy_chunks(plans, DiskChunkReader(BytesDisk(data)), sink, workers=3, buffer_size=CHUNK)
    assert sink.done[1] is None  # read, all zeros, not stored
    assert sink.stored[sink.done[0] or ""] == bytes(data[:CHUNK])
    assert sink.stored[sink.done[2] or ""] == bytes(data[2 * CHUNK : 3 * CHUNK])
    assert len(sink.stored) == 2


def test_short_last_chunk() -> None:
    data = os.urandom(CHUNK + 7)
    sink = Digests()
    copy_chunks([whole(1, 7)], DiskChunkReader(BytesDisk(data)), sink, workers=1, buffer_size=CHUNK)
    assert list(sink.stored.values()) == [data[CHUNK:]]


def test_disk_to_disk_zero_fills_only_when_asked() -> None:
    source = BytesDisk(os.urandom(CHUNK) + bytes(CHUNK))
    stale = BytesDisk(b"\xff" * 2 * CHUNK)
    reader = DiskChunkReader(source)
    copy_chunks(
        [whole(0), whole(1)],
        reader,
        DiskChunkWriter(stale, zero_fill=False),
        workers=2,
        buffer_size=CHUNK,
    )
    assert stale.data[CHUNK:] == b"\xff" * CHUNK
    copy_chunks(
        [whole(0), whole(1)],
        reader,
        DiskChunkWriter(stale, zero_fill=True),
        workers=2,
        buffer_size=CHUNK,
    )
    assert stale.data == source.data


class FailingReader:
    """Fails on one chunk; counts what it was asked to read."""

    def __init__(self, fail_at: int, errors: list[BaseException] | None = None) -> None:
        self.fail_at = fail_at
        self.errors = errors or [OSError("the first failure")]
        self.reads: list[int] = []
        self.lock = threading.Lock()

    def read_chunk(self, plan: ChunkPlan, buffer: memoryview) -> memoryview | None:
        with self.lock:
            self.reads.append(plan.index)
        if plan.index >= self.fail_at:
            with self.lock:
                error = self.errors.pop(0) if self.errors else ValueError("a later failure")
            raise error
        time.sleep(0.001)
        return None


def test_the_first_error_stops_the_copy_and_is_raised() -> None:
    reader = FailingReader(fail_at=5)
    plans = (whole(i) for i in range(10_000))
    with pytest.raises(OSError, match="the first failure"):
        copy_chunks(plans, reader, Digests(), workers=4, buffer_size=CHUNK)
    # a bounded queue: after the failure only what was already queued was looked at
    assert len(reader.reads) < 40


def test_plans_are_consumed_lazily() -> None:
    fed: list[int] = []

    def plans() -> Iterator[ChunkPlan]:
        for i in range(1000):
            fed.append(i)
            yield whole(i)

    reader = FailingReader(fail_at=0)
    with pytest.raises(OSError):
        copy_chunks(plans(), reader, Digests(), workers=2, buffer_size=CHUNK)
    assert len(fed) < 20
