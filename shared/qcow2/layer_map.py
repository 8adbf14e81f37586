"""Which guest ranges one qcow2 layer holds, and where their bytes are in the file.

A layer is one qcow2 file of a snapshot chain read without its backing file: clusters it
does not allocate read through to the backing file, and are left out of the map. The tables
are read through `RandomAccess` (often over a network), so the L1 table costs one read and
each L2 table one read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

import zstandard

from shared.qcow2.header import Qcow2Error, Qcow2Header, RandomAccess

L1_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2_COMPRESSED = 1 << 62
L2_ZERO = 1 << 0
_DESCRIPTOR_MASK = (1 << 62) - 1
_SECTOR = 512
_SUBCLUSTERS = 32
_ALL_SUBCLUSTERS = (1 << _SUBCLUSTERS) - 1
_CORRUPT_HINT = "the image is corrupt; check it with qemu-img check"


class Kind(Enum):
    DATA = "data"
    ZERO = "zero"
    COMPRESSED = "compressed"


@dataclass(frozen=True)
class Allocation:
    """A guest range this layer holds.

    DATA: `host_offset` is the file offset of guest byte `start`, and the run is contiguous
    in the file. ZERO: reads as zeros, nothing to read. COMPRESSED: one cluster, whose
    compressed bytes are `host_length` bytes at `host_offset` (feed them to `inflate`).
    """

    start: int
    length: int
    kind: Kind
    host_offset: int = 0
    host_length: int = 0

    @property
    def end(self) -> int:
        return self.start + self.length


# What the table walk yields, before merging: (start, length, kind, host offset, host length).
# Plain tuples: a big layer has millions of clusters.
_Piece = tuple[int, int, Kind, int, int]


@dataclass(frozen=True)
class _Geometry:
    header: Qcow2Header
    name: str

    @property
    def entry_size(self) -> int:
        return 16 if self.header.extended_l2 else 8

    @property
    def l2_entries(self) -> int:
        return self.header.cluster_size // self.entry_size

    @property
    def clusters(self) -> int:
        return -(-self.header.virtual_size // self.header.cluster_size)


def map_layer(
    src: RandomAccess, header: Qcow2Header, *, name: str = "qcow2 image"
) -> list[Allocation]:
    """The allocations of this layer alone, sorted by guest offset and merged where possible.

    `name` says which file in error messages.
    """
    return _merge(_walk(src, _Geometry(header, name)), header.virtual_size)


def _walk(src: RandomAccess, geo: _Geometry) -> Iterator[_Piece]:
    for index, l2_offset in _l1_entries(src, geo):
        first = index * geo.l2_entries
        count = min(geo.l2_entries, geo.clusters - first)
        table = _read_exact(src, l2_offset, count * geo.entry_size, geo, "L2 table")
        if geo.header.extended_l2:
            yield from _extended_l2(table, first, geo)
        else:
            yield from _standard_l2(table, first, geo)


def _l1_entries(src: RandomAccess, geo: _Geometry) -> Iterator[tuple[int, int]]:
    """(L1 index, L2 table offset) of the L2 tables this layer has."""
    count = min(geo.header.l1_size, -(-geo.clusters // geo.l2_entries))
    if count == 0:
        return
    raw = _read_exact(src, geo.header.l1_table_offset, count * 8, geo, "L1 table")
    for index, entry in enumerate(struct.unpack(f">{count}Q", raw)):
        offset = entry & L1_OFFSET_MASK
        if offset == 0:
            continue
        if offset % geo.header.cluster_size:
            raise Qcow2Error(
                f"{geo.name}: L1 entry {index} points to {offset:#x}, not a cluster boundary",
                hint=_CORRUPT_HINT,
            )
        yield index, offset


def _read_exact(src: RandomAccess, offset: int, length: int, geo: _Geometry, what: str) -> bytes:
    data = src.read_at(offset, length)
    if len(data) != length:
        raise Qcow2Error(
            f"{geo.name}: the qcow2 {what} at {offset:#x} ({length} bytes) runs past the end "
            f"of the file (read {len(data)} bytes)",
            hint="the file is truncated or still being written; " + _CORRUPT_HINT,
        )
    return data


def _standard_l2(table: bytes, first: int, geo: _Geometry) -> Iterator[_Piece]:
    entries = struct.unpack(f">{len(table) // 8}Q", table)
    cluster_size = geo.header.cluster_size
    for index, entry in [(i, e) for i, e in enumerate(entries) if e]:
        guest = (first + index) * cluster_size
        if entry & L2_COMPRESSED:
            yield _compressed(entry, guest, geo)
        elif entry & L2_ZERO:
            yield guest, cluster_size, Kind.ZERO, 0, 0
        elif entry & L2_OFFSET_MASK:
            yield guest, cluster_size, Kind.DATA, _host(entry, guest, geo), 0


def _extended_l2(table: bytes, first: int, geo: _Geometry) -> Iterator[_Piece]:
    """Extended L2 entries: a standard descriptor and a bitmap of 32 subclusters.

    Bitmap bits 0-31 say "allocated here", bits 32-63 "reads as zeros"; a subcluster with
    neither reads through to the backing file.
    """
    entries = struct.unpack(f">{len(table) // 8}Q", table)
    cluster_size = geo.header.cluster_size
    for index in range(len(entries) // 2):
        entry, bitmap = entries[2 * index], entries[2 * index + 1]
        if entry == 0 and bitmap == 0:
            continue
        guest = (first + index) * cluster_size
        if entry & L2_COMPRESSED:
            yield _compressed(entry, guest, geo)
            continue
        host = _host(entry, guest, geo) if entry & L2_OFFSET_MASK else 0
        yield from _subclusters(bitmap, guest, host, geo)


def _subclusters(bitmap: int, guest: int, host: int, geo: _Geometry) -> Iterator[_Piece]:
    allocated, zero = bitmap & _ALL_SUBCLUSTERS, bitmap >> _SUBCLUSTERS
    if allocated & zero or (allocated and not host):
        raise Qcow2Error(
            f"{geo.name}: the extended L2 entry of guest offset {guest:#x} has an invalid "
            f"subcluster bitmap {bitmap:#018x}",
            hint=_CORRUPT_HINT,
        )
    size = geo.header.cluster_size // _SUBCLUSTERS
    for first, count, kind in _bitmap_runs(allocated, zero):
        offset = host + first * size if kind is Kind.DATA else 0
        yield guest + first * size, count * size, kind, offset, 0


def _bitmap_runs(allocated: int, zero: int) -> Iterator[tuple[int, int, Kind]]:
    """(first subcluster, count, kind) of each run of allocated or zero subclusters."""
    run_start, run_kind = 0, _subcluster_kind(allocated, zero, 0)
    for bit in range(1, _SUBCLUSTERS + 1):
        kind = _subcluster_kind(allocated, zero, bit)
        if kind is not run_kind:
            if run_kind is not None:
                yield run_start, bit - run_start, run_kind
            run_start, run_kind = bit, kind


def _subcluster_kind(allocated: int, zero: int, bit: int) -> Kind | None:
    if allocated >> bit & 1:
        return Kind.DATA
    return Kind.ZERO if zero >> bit & 1 else None


def _host(entry: int, guest: int, geo: _Geometry) -> int:
    host = entry & L2_OFFSET_MASK
    if host % geo.header.cluster_size:
        raise Qcow2Error(
            f"{geo.name}: the L2 entry of guest offset {guest:#x} points to {host:#x}, "
            "not a cluster boundary",
            hint=_CORRUPT_HINT,
        )
    return host


def _compressed(entry: int, guest: int, geo: _Geometry) -> _Piece:
    """Decode a compressed cluster descriptor (qcow2.txt, "Compressed Clusters Descriptor")."""
    descriptor = entry & _DESCRIPTOR_MASK
    size_bits = geo.header.cluster_bits - 8
    offset_bits = 62 - size_bits
    offset = descriptor & ((1 << offset_bits) - 1)
    sectors = ((descriptor >> offset_bits) & ((1 << size_bits) - 1)) + 1
    length = sectors * _SECTOR - (offset % _SECTOR)
    return guest, geo.header.cluster_size, Kind.COMPRESSED, offset, length


def _merge(pieces: Iterator[_Piece], virtual_size: int) -> list[Allocation]:
    """Merge adjacent ZERO runs, and DATA runs contiguous in the file too; cut the last
    cluster at the virtual size."""
    merged: list[_Piece] = []
    for start, length, kind, host, host_length in pieces:
        if start >= virtual_size:
            break
        length = min(length, virtual_size - start)
        if merged and _mergeable(merged[-1], start, kind, host):
            last = merged[-1]
            merged[-1] = (last[0], last[1] + length, kind, last[3], 0)
        else:
            merged.append((start, length, kind, host, host_length))
    return [Allocation(*piece) for piece in merged]


def _mergeable(last: _Piece, start: int, kind: Kind, host: int) -> bool:
    last_start, last_length, last_kind, last_host, _ = last
    if last_start + last_length != start or last_kind is not kind:
        return False
    if kind is Kind.ZERO:
        return True
    return kind is Kind.DATA and last_host + last_length == host


def inflate(header: Qcow2Header, compressed: bytes) -> bytes:
    """One cluster's bytes from its compressed data (which may carry trailing bytes)."""
    size = header.cluster_size
    try:
        if header.compression_type == "zstd":
            data = zstandard.ZstdDecompressor().decompress(
                compressed, max_output_size=size, allow_extra_data=True
            )
        else:
            data = zlib.decompressobj(-12).decompress(compressed, size)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise Qcow2Error(
            f"a {header.compression_type} compressed qcow2 cluster does not decompress: {exc}",
            hint=_CORRUPT_HINT,
        ) from exc
    if len(data) != size:
        raise Qcow2Error(
            f"a {header.compression_type} compressed qcow2 cluster decompresses to "
            f"{len(data)} bytes, not the cluster size {size}",
            hint=_CORRUPT_HINT,
        )
    return data
