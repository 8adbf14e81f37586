"""Write a new qcow2 image as a stream of (file offset, bytes) writes.

Restore writes a disk from the repository into a qcow2 volume without QEMU on the writing
side, and without knowing in advance which clusters hold data. The layout is therefore
append-only:

    cluster 0                 header (written last, by close())
    clusters 1..D             data clusters, in the order they arrived
    then                      L2 tables, L1 table, refcount blocks, refcount table

Every cluster of the file is referenced exactly once (refcount 1), and every byte of the
file is written (clusters are padded with zeros), so the image is valid on a block device
that holds stale bytes too.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Protocol

from shared.qcow2.header import QCOW2_MAGIC

CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
_L2_ENTRIES = CLUSTER_SIZE // 8
_REFCOUNT_ORDER = 4  # 16-bit refcounts
_REFCOUNTS_PER_BLOCK = CLUSTER_SIZE * 8 >> _REFCOUNT_ORDER
_REFTABLE_ENTRIES_PER_CLUSTER = CLUSTER_SIZE // 8
_COPIED = 1 << 63
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
_HEADER_LENGTH = _HEADER.size  # 104: version 3 without the compression type byte
_ZERO_CLUSTER = bytes(CLUSTER_SIZE)


class FileWriter(Protocol):
    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write `data` at file `offset`; may be called from several threads at once for
        disjoint ranges."""
        ...


@dataclass(frozen=True)
class _Layout:
    """Where the metadata after `data_clusters` data clusters goes (in clusters)."""

    data_clusters: int
    l2_tables: int
    l1_entries: int

    @property
    def l2_start(self) -> int:
        return 1 + self.data_clusters

    @property
    def l1_start(self) -> int:
        return self.l2_start + self.l2_tables

    @property
    def l1_clusters(self) -> int:
        return _ceil_div(self.l1_entries * 8, CLUSTER_SIZE)

    @property
    def refblock_start(self) -> int:
        return self.l1_start + self.l1_clusters

    @property
    def refcounts(self) -> tuple[int, int]:
        """(refcount blocks, refcount table clusters): they count themselves too."""
        blocks, table = 1, 1
        while True:
            total = self.refblock_start + blocks + table
            need_blocks = _ceil_div(total, _REFCOUNTS_PER_BLOCK)
            need_table = _ceil_div(need_blocks, _REFTABLE_ENTRIES_PER_CLUSTER)
            if (need_blocks, need_table) == (blocks, table):
                return blocks, table
            blocks, table = max(blocks, need_blocks), max(table, need_table)

    @property
    def reftable_start(self) -> int:
        return self.refblock_start + self.refcounts[0]

    @property
    def total_clusters(self) -> int:
        return self.reftable_start + self.refcounts[1]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _is_zero(chunk: memoryview) -> bool:
    # Comparing bytes is a memcmp; comparing a memoryview goes element by element (30x slower).
    return chunk.tobytes() == _ZERO_CLUSTER[: len(chunk)]


def _runs(placed: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(host offset, position in the data, length) of each run of clusters that are
    contiguous both in the data and in the file: one write_at each."""
    runs: list[tuple[int, int, int]] = []
    for host, pos in placed:
        if runs:
            run_host, run_pos, length = runs[-1]
            if host == run_host + length and pos == run_pos + length:
                runs[-1] = (run_host, run_pos, length + CLUSTER_SIZE)
                continue
        runs.append((host, pos, CLUSTER_SIZE))
    return runs


def _l1_entries(virtual_size: int) -> int:
    return _ceil_div(_ceil_div(virtual_size, CLUSTER_SIZE), _L2_ENTRIES)


def qcow2_size_bound(virtual_size: int, data_bytes: int) -> int:
    """An upper bound of the size of the file Qcow2StreamWriter writes to an image of
    `virtual_size` bytes when the write() calls carry `data_bytes` bytes in all (counting
    only the clusters that are not all zeros gives a tighter bound)."""
    data_clusters = min(_ceil_div(data_bytes, CLUSTER_SIZE), _ceil_div(virtual_size, CLUSTER_SIZE))
    l1_entries = _l1_entries(virtual_size)
    layout = _Layout(data_clusters, min(data_clusters, l1_entries), l1_entries)
    return layout.total_clusters * CLUSTER_SIZE


class Qcow2StreamWriter:
    """Writes a new qcow2 v3 image (no backing file, cluster size 64 KiB) of `virtual_size`
    bytes through `out`, without knowing in advance which clusters will hold data: data
    clusters are appended in arrival order after a reserved header cluster; all-zero clusters
    are left unallocated (they read as zeros); `close()` writes the L2 tables, the L1 table,
    the refcount blocks and the refcount table after the data, and the header (cluster 0)
    last. Thread safe: several threads may call write() at once for different ranges; call
    close() once they have all returned."""

    def __init__(self, out: FileWriter, virtual_size: int) -> None:
        if virtual_size < 0:
            raise ValueError(f"virtual size {virtual_size} is negative")
        self._out = out
        self._virtual_size = virtual_size
        self._lock = threading.Lock()
        self._l2: dict[int, bytearray] = {}  # L1 index -> L2 table, big-endian entries
        self._data_clusters = 0
        self._closed = False

    def write(self, guest_offset: int, data: bytes | memoryview) -> None:
        """Write `data` at `guest_offset` (cluster aligned; its length a multiple of the
        cluster size unless it ends at the end of the image). A cluster written twice holds
        the last data, in the host cluster of the first write."""
        view = memoryview(data).cast("B")
        self._check_write(guest_offset, len(view))
        positions = range(0, len(view), CLUSTER_SIZE)
        zero = [_is_zero(view[pos : pos + CLUSTER_SIZE]) for pos in positions]
        with self._lock:
            if self._closed:
                raise ValueError("write() after close() of a qcow2 stream writer")
            hosts = [
                self._place(guest_offset + pos, is_zero)
                for pos, is_zero in zip(positions, zero, strict=True)
            ]
        runs = _runs([(host, pos) for host, pos in zip(hosts, positions, strict=True) if host])
        for host, pos, length in runs:
            self._write_run(host, view[pos : pos + length])

    def _check_write(self, guest_offset: int, length: int) -> None:
        end = guest_offset + length
        if guest_offset % CLUSTER_SIZE or guest_offset < 0 or end > self._virtual_size:
            raise ValueError(
                f"qcow2 write at {guest_offset} of {length} bytes: the offset must be aligned "
                f"to {CLUSTER_SIZE} and the range inside the virtual size {self._virtual_size}"
            )
        if length % CLUSTER_SIZE and end != self._virtual_size:
            raise ValueError(
                f"qcow2 write at {guest_offset} of {length} bytes: only the last write of the "
                f"image may be shorter than a multiple of {CLUSTER_SIZE}"
            )

    def _place(self, guest: int, is_zero: bool) -> int:
        """The host offset of the cluster at `guest`, or 0 to skip it (all zeros, never
        written). A cluster that was written before keeps its host cluster, even when it
        is all zeros now, so no host cluster is ever freed. Called with the lock held."""
        index, slot = divmod(guest // CLUSTER_SIZE, _L2_ENTRIES)
        table = self._l2.get(index)
        if table is not None:
            (entry,) = struct.unpack_from(">Q", table, slot * 8)
            if entry:
                return int(entry & ~_COPIED)
        if is_zero:
            return 0
        if table is None:
            table = self._l2[index] = bytearray(CLUSTER_SIZE)
        self._data_clusters += 1
        host = self._data_clusters * CLUSTER_SIZE
        struct.pack_into(">Q", table, slot * 8, host | _COPIED)
        return host

    def _write_run(self, host: int, data: memoryview) -> None:
        """Write whole clusters: a short last cluster is padded with zeros."""
        padding = -len(data) % CLUSTER_SIZE
        self._out.write_at(host, data if not padding else bytes(data) + bytes(padding))

    def close(self) -> int:
        """Write the metadata and the header; return the size of the file."""
        with self._lock:
            if self._closed:
                raise ValueError("close() of a qcow2 stream writer that is closed already")
            self._closed = True
        l1_entries = _l1_entries(self._virtual_size)
        layout = _Layout(self._data_clusters, len(self._l2), l1_entries)
        self._write_tables(layout)
        self._write_refcounts(layout)
        self._out.write_at(0, self._header(layout))
        return layout.total_clusters * CLUSTER_SIZE

    def _write_tables(self, layout: _Layout) -> None:
        l1 = bytearray(layout.l1_clusters * CLUSTER_SIZE)
        for position, index in enumerate(sorted(self._l2)):
            host = (layout.l2_start + position) * CLUSTER_SIZE
            self._out.write_at(host, memoryview(self._l2[index]))
            struct.pack_into(">Q", l1, index * 8, host | _COPIED)
        self._out.write_at(layout.l1_start * CLUSTER_SIZE, memoryview(l1))

    def _write_refcounts(self, layout: _Layout) -> None:
        """Every cluster of the file has refcount 1."""
        blocks, table_clusters = layout.refcounts
        total = layout.total_clusters
        table = bytearray(table_clusters * CLUSTER_SIZE)
        one = struct.pack(">H", 1)
        for block in range(blocks):
            counted = min(_REFCOUNTS_PER_BLOCK, total - block * _REFCOUNTS_PER_BLOCK)
            data = one * counted + bytes((_REFCOUNTS_PER_BLOCK - counted) * 2)
            host = (layout.refblock_start + block) * CLUSTER_SIZE
            self._out.write_at(host, data)
            struct.pack_into(">Q", table, block * 8, host)
        self._out.write_at(layout.reftable_start * CLUSTER_SIZE, memoryview(table))

    def _header(self, layout: _Layout) -> bytes:
        header = _HEADER.pack(
            QCOW2_MAGIC,
            3,  # version
            0,  # backing_file_offset
            0,  # backing_file_size
            CLUSTER_BITS,
            self._virtual_size,
            0,  # crypt_method
            layout.l1_entries,
            layout.l1_start * CLUSTER_SIZE if layout.l1_entries else 0,
            layout.reftable_start * CLUSTER_SIZE,
            layout.refcounts[1],
            0,  # nb_snapshots
            0,  # snapshots_offset
            0,  # incompatible_features
            0,  # compatible_features
            0,  # autoclear_features
            _REFCOUNT_ORDER,
            _HEADER_LENGTH,
        )
        # The rest of the cluster is zeros: an end-of-extensions marker, then padding.
        return header + bytes(CLUSTER_SIZE - len(header))
