"""Snapshot-chain backups: a disk's qcow2 layers, each copied as what it holds.

A disk's data as of a snapshot is a chain of volumes: the snapshot's volume on top of its
backing files. A full backup reads the whole chain, an incremental only the layers above the
last kept snapshot's volume. Each layer is mapped (`shared.qcow2`) and copied in its own
pass, bottom up, reading only the clusters that layer allocates: a chunk a layer touches is
the chunk as the layers below left it (stored earlier in this job, or the parent backup's,
or zeros) with the layer's clusters laid over it. The last pass to touch a chunk leaves the
chunk of the merged image, so every backup's manifest is a full image like any other.

Passes run one after another because a layer may only be readable on its own (an image
transfer locks the disk); each pass records its chunks, so a re-delivered task resumes in the
pass it stopped in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from shared.backup.context import DiskRef
from shared.backup.copy import copy_chunks
from shared.backup.journal import JobJournal
from shared.backup.plan import ChunkPlan, Span, chunk_span
from shared.backup.progress import LOCK_RENEW_EVERY, ChunkProgress
from shared.errors import DroverError
from shared.logging import get_logger
from shared.qcow2.header import QCOW2_MAGIC, read_header
from shared.qcow2.layer_map import Allocation, Kind, inflate, map_layer
from shared.repository.chunks import is_zero
from shared.repository.repository import Repository

MAX_CHAIN = 256  # deeper chains than oVirt ever makes mean a loop in the backing files
log = get_logger(__name__)


class ChainBroken(DroverError):
    """The chain does not lead where the backup needs it to (the kept snapshot's volume)."""


class OpenLayer(Protocol):
    def __call__(
        self, volume_id: str, above: Layer | None = None
    ) -> AbstractContextManager[LayerFile]:
        """The volume's file; `above` is the layer whose backing file it is, when the chain
        is being walked down (a volume found by its backing file name)."""
        ...


class LayerFile(Protocol):
    """Random access to one volume file, as bytes of the file (not of the guest)."""

    name: str  # for messages: "volume V of disk D on host H"

    @property
    def connections(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...

    def read_ranges(self, ranges: Sequence[Span], buffer: memoryview) -> None:
        """The ranges' bytes, concatenated, into buffer[:total]."""
        ...

    def data_extents(self, size: int) -> list[Span]:
        """Where a raw volume holds data (all of it when the file cannot tell)."""
        ...


@dataclass(frozen=True)
class Layer:
    volume_id: str
    format: str  # raw | cow
    backing_file: str | None  # as the qcow2 header names the volume below; None: the bottom
    allocations: tuple[Allocation, ...]

    @property
    def backing_id(self) -> str | None:
        return posixpath.basename(self.backing_file) if self.backing_file else None

    @property
    def data_bytes(self) -> int:
        return sum(a.length for a in self.allocations if a.kind is not Kind.ZERO)

    def describe(self) -> dict[str, object]:
        return {"volume_id": self.volume_id, "format": self.format, "bytes": self.data_bytes}


def map_volume(file: LayerFile, volume_id: str, size: int) -> Layer:
    """What one volume holds: a qcow2 layer's own clusters, or a raw volume's data."""
    if file.read_at(0, len(QCOW2_MAGIC)) != QCOW2_MAGIC:
        extents = file.data_extents(size)
        data = tuple(Allocation(e.start, e.length, Kind.DATA, host_offset=e.start) for e in extents)
        return Layer(volume_id, "raw", None, data)
    header = read_header(file, file.name)
    return Layer(volume_id, "cow", header.backing_file, tuple(map_layer(file, header)))


def read_chain(open_layer: OpenLayer, top: str, size: int, stop_at: str | None) -> list[Layer]:
    """The layers from `top` down to (not including) `stop_at`, or to the bottom; bottom up."""
    layers: list[Layer] = []
    volume: str | None = top
    while volume is not None and volume != stop_at:
        if len(layers) >= MAX_CHAIN or any(layer.volume_id == volume for layer in layers):
            raise ChainBroken(f"the backing chain of volume {top} loops at {volume}")
        with open_layer(volume, layers[-1] if layers else None) as file:
            layers.append(map_volume(file, volume, size))
        volume = layers[-1].backing_id
    if stop_at is not None and volume != stop_at:
        raise ChainBroken(f"volume {stop_at} of the kept snapshot is not below volume {top}")
    return list(reversed(layers))


# planning ------------------------------------------------------------------------------


def _pieces(layer: Layer, chunk_size: int, disk_size: int) -> dict[int, list[Allocation]]:
    """The layer's allocations cut at chunk boundaries, by chunk index."""
    by_chunk: dict[int, list[Allocation]] = {}
    for allocation in layer.allocations:
        for piece in _split(allocation, chunk_size, disk_size):
            by_chunk.setdefault(piece.start // chunk_size, []).append(piece)
    return by_chunk


def _split(a: Allocation, chunk_size: int, disk_size: int) -> Iterator[Allocation]:
    start, end = a.start, min(a.end, disk_size)
    while start < end:
        stop = min(end, (start // chunk_size + 1) * chunk_size)
        if a.kind is Kind.DATA:
            offset = a.host_offset + (start - a.start)
            yield Allocation(start, stop - start, Kind.DATA, host_offset=offset)
        elif a.kind is Kind.ZERO:
            yield Allocation(start, stop - start, Kind.ZERO)
        else:  # one compressed cluster never crosses a chunk (chunks are whole clusters)
            yield a
        start = stop


def _plans(pieces: Mapping[int, list[Allocation]], chunk_size: int, size: int) -> list[ChunkPlan]:
    plans = []
    for index in sorted(pieces):
        span = chunk_span(index, chunk_size, size)
        reads = tuple(Span(p.start, p.length) for p in pieces[index] if p.kind is not Kind.ZERO)
        plans.append(ChunkPlan(index, span.start, span.length, reads))
    return plans


# copying ---------------------------------------------------------------------------------


class LayerChunkReader:
    """A chunk as the layers below left it, with this layer's clusters laid over it."""

    def __init__(
        self,
        file: LayerFile,
        pieces: Mapping[int, list[Allocation]],
        base: Mapping[int, str],
        repo: Repository,
        inflate_cluster: Callable[[bytes], bytes],
    ) -> None:
        self._file = file
        self._pieces = pieces
        self._base = base
        self._repo = repo
        self._inflate = inflate_cluster

    def read_chunk(self, plan: ChunkPlan, buffer: memoryview) -> memoryview | None:
        pieces = self._pieces[plan.index]
        if sum(p.length for p in pieces) < plan.length:
            self._load_base(plan, buffer)
        data = [p for p in pieces if p.kind is Kind.DATA]
        self._read_data(plan, data, buffer)
        for piece in pieces:
            view = buffer[piece.start - plan.start : piece.end - plan.start]
            if piece.kind is Kind.ZERO:
                view[:] = bytes(len(view))
            elif piece.kind is Kind.COMPRESSED:
                self._read_compressed(piece, plan, buffer)
        return None if is_zero(buffer) else buffer

    def _load_base(self, plan: ChunkPlan, buffer: memoryview) -> None:
        digest = self._base.get(plan.index)
        if not digest:
            buffer[:] = bytes(len(buffer))
            return
        buffer[:] = self._repo.get_chunk(digest)

    def _read_data(self, plan: ChunkPlan, data: list[Allocation], buffer: memoryview) -> None:
        if not data:
            return
        if len(data) == 1:  # the common case: straight into place
            piece = data[0]
            view = buffer[piece.start - plan.start : piece.end - plan.start]
            self._file.read_ranges([Span(piece.host_offset, piece.length)], view)
            return
        scratch = memoryview(bytearray(sum(p.length for p in data)))
        self._file.read_ranges([Span(p.host_offset, p.length) for p in data], scratch)
        cursor = 0
        for piece in data:
            buffer[piece.start - plan.start : piece.end - plan.start] = scratch[
                cursor : cursor + piece.length
            ]
            cursor += piece.length

    def _read_compressed(self, piece: Allocation, plan: ChunkPlan, buffer: memoryview) -> None:
        cluster = self._inflate(self._file.read_at(piece.host_offset, piece.host_length))
        end = min(piece.end, plan.start + plan.length)
        buffer[piece.start - plan.start : end - plan.start] = cluster[: end - piece.start]


class LayerChunkWriter:
    """Stores each chunk of a pass and records it in the pass's map and the disk's."""

    def __init__(self, repo: Repository, journal: JobJournal, disk_id: str, layer: int) -> None:
        self._repo = repo
        self._journal = journal
        self._disk_id = disk_id
        self._layer = layer
        self._done = 0

    def write_chunk(self, plan: ChunkPlan, data: memoryview | None) -> None:
        store, job_id = self._journal.store, self._journal.job_id
        digest = "" if data is None else self._repo.put_chunk(data)
        store.record_layer_chunk(
            job_id, self._disk_id, self._layer, plan.index, digest, plan.bytes_to_read
        )
        self._done += 1
        if self._done % LOCK_RENEW_EVERY == 0:
            self._journal.renew_lock()


@dataclass(frozen=True)
class ChainCopy:
    """One disk's snapshot-chain copy: where its layers come from and what lies below them."""

    disk: DiskRef
    layers: list[Layer]  # bottom up
    open_layer: OpenLayer
    parent_chunks: Mapping[int, str]  # the parent backup's chunks (incremental), else empty


def copy_chain(copy: ChainCopy, repo: Repository, journal: JobJournal) -> None:
    """Copy every layer's pass, bottom up; passes and chunks already done are skipped."""
    disk, store, job_id = copy.disk, journal.store, journal.job_id
    pieces = [_pieces(layer, repo.chunk_size, disk.size) for layer in copy.layers]
    touched = set().union(*(p.keys() for p in pieces)) if pieces else set()
    ChunkProgress(journal, disk).plan(len(touched))
    store.save_disk_chain(job_id, disk.id, [layer.describe() for layer in copy.layers])
    below: dict[int, str] = dict(copy.parent_chunks)
    for number, (layer, layer_pieces) in enumerate(zip(copy.layers, pieces, strict=True)):
        done = store.layer_chunks(job_id, disk.id, number)
        todo = [p for p in _plans(layer_pieces, repo.chunk_size, disk.size) if p.index not in done]
        if todo:
            log.info("copying layer", disk_id=disk.id, volume_id=layer.volume_id, chunks=len(todo))
            _copy_pass(copy, layer, number, layer_pieces, below, todo, repo, journal)
        below.update(store.layer_chunks(job_id, disk.id, number))
    repo.sync()


def _copy_pass(
    copy: ChainCopy,
    layer: Layer,
    number: int,
    pieces: Mapping[int, list[Allocation]],
    below: Mapping[int, str],
    todo: list[ChunkPlan],
    repo: Repository,
    journal: JobJournal,
) -> None:
    with copy.open_layer(layer.volume_id) as file:
        inflate_cluster = _inflater(file, layer)
        copy_chunks(
            todo,
            LayerChunkReader(file, pieces, below, repo, inflate_cluster),
            LayerChunkWriter(repo, journal, copy.disk.id, number),
            workers=file.connections,
            buffer_size=repo.chunk_size,
        )


def _inflater(file: LayerFile, layer: Layer) -> Callable[[bytes], bytes]:
    if not any(a.kind is Kind.COMPRESSED for a in layer.allocations):
        return _no_compressed
    header = read_header(file, file.name)
    return lambda data: inflate(header, data)


def _no_compressed(data: bytes) -> bytes:
    raise AssertionError("the layer map has no compressed cluster")
