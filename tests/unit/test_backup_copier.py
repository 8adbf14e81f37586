import hashlib
import os

from shared.backup.copier import ChunkCopier
from shared.backup.plan import ChunkPlan, Span, plan_data_chunks

CHUNK = 64 * 1024


class BytesDisk:
    def __init__(self, data: bytes, max_read: int = 10_000) -> None:
        self.data = data
        self.max_read = max_read  # short reads, as a network source may do

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = min(len(buf), self.max_read, len(self.data) - offset)
        buf[:n] = self.data[offset : offset + n]
        return n


def test_copies_data_and_reports_zero_chunks_without_storing() -> None:
    data = bytearray(4 * CHUNK + 100)
    data[10:20] = os.urandom(10)
    data[2 * CHUNK : 3 * CHUNK] = os.urandom(CHUNK)
    stored: dict[str, bytes] = {}
    results: dict[int, str | None] = {}

    def store(view: memoryview) -> str:
        digest = hashlib.sha256(view).hexdigest()
        stored[digest] = bytes(view)
        return digest

    plans = plan_data_chunks([Span(0, 100), Span(CHUNK, CHUNK), Span(2 * CHUNK, CHUNK)],
                             CHUNK, len(data))
    ChunkCopier(BytesDisk(bytes(data)), store, CHUNK, workers=3).copy(
        plans, lambda plan, digest: results.__setitem__(plan.index, digest)
    )
    assert results[1] is None  # read, all zeros, not stored
    assert stored[results[0]] == bytes(data[:CHUNK])
    assert stored[results[2]] == bytes(data[2 * CHUNK : 3 * CHUNK])
    assert len(stored) == 2


def test_short_last_chunk() -> None:
    data = os.urandom(CHUNK + 7)
    seen: list[bytes] = []
    plan = ChunkPlan(1, CHUNK, 7, (Span(CHUNK, 7),))
    ChunkCopier(BytesDisk(data), lambda v: seen.append(bytes(v)) or "d", CHUNK).copy(
        [plan], lambda _p, _d: None
    )
    assert seen == [data[CHUNK:]]
