"""Which fixed, aligned chunks of a disk a backup reads, and which byte ranges in each.

A full backup reads the extents that hold data; an incremental reads whole chunks that
any dirty extent touches. Chunks never read are zeros (full) or unchanged (incremental).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    start: int
    length: int  # the last chunk of a disk may be short
    reads: tuple[Span, ...]  # absolute ranges to read; the rest of the chunk is zeros

    @property
    def bytes_to_read(self) -> int:
        return sum(span.length for span in self.reads)


def chunk_span(index: int, chunk_size: int, disk_size: int) -> Span:
    start = index * chunk_size
    return Span(start, min(chunk_size, disk_size - start))


def plan_data_chunks(data: Iterable[Span], chunk_size: int, disk_size: int) -> list[ChunkPlan]:
    """Chunks holding any data, each with exactly the data ranges inside it."""
    reads: dict[int, list[Span]] = {}
    for span in data:
        for index, piece in _split(span, chunk_size):
            reads.setdefault(index, []).append(piece)
    return [_plan(index, chunk_size, disk_size, tuple(reads[index])) for index in sorted(reads)]


def plan_dirty_chunks(dirty: Iterable[Span], chunk_size: int, disk_size: int) -> list[ChunkPlan]:
    """Whole chunks touched by any dirty range."""
    indexes = sorted({index for span in dirty for index, _ in _split(span, chunk_size)})
    plans = []
    for index in indexes:
        span = chunk_span(index, chunk_size, disk_size)
        plans.append(_plan(index, chunk_size, disk_size, (span,)))
    return plans


def _plan(index: int, chunk_size: int, disk_size: int, reads: tuple[Span, ...]) -> ChunkPlan:
    span = chunk_span(index, chunk_size, disk_size)
    return ChunkPlan(index, span.start, span.length, reads)


def _split(span: Span, chunk_size: int) -> Iterable[tuple[int, Span]]:
    offset = span.start
    while offset < span.end:
        index = offset // chunk_size
        end = min(span.end, (index + 1) * chunk_size)
        yield index, Span(offset, end - offset)
        offset = end
