"""The qcow2 header: what a backup needs to know about one qcow2 file before reading its tables.

Layout and field meanings follow QEMU's docs/interop/qcow2.txt. The file is read through
`RandomAccess` (a local file, SSH, HTTP range requests), so the header costs one read of 4 KiB,
or one more of the first cluster when the header extensions run past that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from shared.errors import DroverError

QCOW2_MAGIC = b"QFI\xfb"

# Incompatible feature bits (header offset 72, version 3).
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
_KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2

_EXT_END = 0x00000000
_EXT_BACKING_FORMAT = 0xE2792ACA

_V2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")  # up to and including snapshots_offset: 72 bytes
_V3_FIELDS = struct.Struct(">QQQII")  # incompatible .. header_length: bytes 72-103
_V2_HEADER_LENGTH = 72
_V3_MIN_HEADER_LENGTH = 104
_FIRST_READ = 4096
_MIN_CLUSTER_BITS = 9
_MAX_CLUSTER_BITS = 21
_COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
_MAX_L1_ENTRIES = 32 * 1024 * 1024 // 8  # QEMU's limit (QCOW_MAX_L1_SIZE)

_NOT_READABLE_HINT = (
    "read this disk through QEMU instead (the image_transfer mode), or convert the image "
    "with qemu-img convert"
)


class RandomAccess(Protocol):
    def read_at(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`; fewer only at the end of the file."""
        ...


class Qcow2Error(DroverError):
    """A qcow2 file that is malformed, truncated, or uses a feature Drover does not read."""


def is_qcow2(first_bytes: bytes) -> bool:
    return first_bytes[:4] == QCOW2_MAGIC


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    cluster_bits: int
    virtual_size: int
    backing_file: str | None
    backing_format: str | None
    l1_table_offset: int
    l1_size: int
    compression_type: str
    extended_l2: bool

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits


@dataclass(frozen=True)
class _Fixed:
    """The fixed part of the header, as stored."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    incompatible: int
    header_length: int
    compression_type: int


class _FirstCluster:
    """The bytes of the first cluster, read lazily: most headers fit in the first 4 KiB."""

    def __init__(self, src: RandomAccess, name: str) -> None:
        self._src = src
        self._name = name
        self._data = src.read_at(0, _FIRST_READ)
        self._read_length = _FIRST_READ
        self._limit = _FIRST_READ

    def set_limit(self, cluster_size: int) -> None:
        self._limit = cluster_size

    def get(self, offset: int, length: int, what: str) -> bytes:
        end = offset + length
        if end > self._limit:
            raise Qcow2Error(
                f"{self._name}: the {what} runs past the first cluster of the qcow2 image",
                hint="the image header is corrupt; check it with qemu-img check",
            )
        if end > len(self._data) and self._read_length < self._limit:
            self._data = self._src.read_at(0, self._limit)
            self._read_length = self._limit
        if end > len(self._data):
            raise _truncated(self._name, what)
        return self._data[offset:end]


def _truncated(name: str, what: str) -> Qcow2Error:
    return Qcow2Error(
        f"{name}: the qcow2 image ends inside its {what}",
        hint="the file is truncated or still being written; check it with qemu-img check",
    )


def read_header(src: RandomAccess, name: str) -> Qcow2Header:
    """Read and check the header of the qcow2 file `src`; `name` says which file in errors."""
    area = _FirstCluster(src, name)
    fixed = _parse_fixed(area, name)
    _check_supported(fixed, name)
    area.set_limit(1 << fixed.cluster_bits)
    backing_format = _read_extensions(area, fixed)
    backing_file = _read_backing_file(area, fixed, name)
    header = Qcow2Header(
        version=fixed.version,
        cluster_bits=fixed.cluster_bits,
        virtual_size=fixed.size,
        backing_file=backing_file,
        backing_format=backing_format if backing_file is not None else None,
        l1_table_offset=fixed.l1_table_offset,
        l1_size=fixed.l1_size,
        compression_type=_COMPRESSION_TYPES[fixed.compression_type],
        extended_l2=bool(fixed.incompatible & INCOMPAT_EXTL2),
    )
    _check_l1(header, name)
    return header


def _parse_fixed(area: _FirstCluster, name: str) -> _Fixed:
    magic = area.get(0, 4, "header")
    if magic != QCOW2_MAGIC:
        raise Qcow2Error(
            f"{name} is not a qcow2 image: it starts with {magic!r}, not {QCOW2_MAGIC!r}",
            hint="check the volume's format: only COW (qcow2) volumes have qcow2 tables to read",
        )
    (_, version, bf_offset, bf_size, cluster_bits, size, crypt, l1_size, l1_offset, *_) = (
        _V2_HEADER.unpack(area.get(0, _V2_HEADER.size, "header"))
    )
    if version not in (2, 3):
        raise Qcow2Error(
            f"{name} is a qcow2 image of version {version}; Drover reads versions 2 and 3",
            hint=_NOT_READABLE_HINT,
        )
    incompatible, header_length, compression = 0, _V2_HEADER_LENGTH, 0
    if version == 3:
        incompatible, _, _, _, header_length = _V3_FIELDS.unpack(
            area.get(_V2_HEADER.size, _V3_FIELDS.size, "header")
        )
        if header_length < _V3_MIN_HEADER_LENGTH:
            raise Qcow2Error(
                f"{name}: qcow2 header length {header_length} is shorter than the "
                f"{_V3_MIN_HEADER_LENGTH} bytes of version 3",
                hint="the image header is corrupt; check it with qemu-img check",
            )
        if header_length > _V3_MIN_HEADER_LENGTH:
            compression = area.get(_V3_MIN_HEADER_LENGTH, 1, "header")[0]
    return _Fixed(
        version=version,
        backing_file_offset=bf_offset,
        backing_file_size=bf_size,
        cluster_bits=cluster_bits,
        size=size,
        crypt_method=crypt,
        l1_size=l1_size,
        l1_table_offset=l1_offset,
        incompatible=incompatible,
        header_length=header_length,
        compression_type=compression,
    )


def _check_supported(fixed: _Fixed, name: str) -> None:
    if fixed.crypt_method != 0:
        raise Qcow2Error(
            f"{name} is an encrypted qcow2 image (crypt_method {fixed.crypt_method}); "
            "Drover cannot read encrypted images as files",
            hint=_NOT_READABLE_HINT,
        )
    if fixed.incompatible & INCOMPAT_CORRUPT:
        raise Qcow2Error(
            f"{name} is marked corrupt in its qcow2 header",
            hint="repair it with qemu-img check -r all (with the VM down) before backing it up",
        )
    if fixed.incompatible & INCOMPAT_DATA_FILE:
        raise Qcow2Error(
            f"{name} keeps its data in an external data file; Drover reads only "
            "self-contained qcow2 images",
            hint=_NOT_READABLE_HINT,
        )
    unknown = fixed.incompatible & ~_KNOWN_INCOMPAT
    if unknown:
        raise Qcow2Error(
            f"{name} uses qcow2 incompatible features Drover does not know (bits {unknown:#x})",
            hint=_NOT_READABLE_HINT,
        )
    if not _MIN_CLUSTER_BITS <= fixed.cluster_bits <= _MAX_CLUSTER_BITS:
        raise Qcow2Error(
            f"{name}: qcow2 cluster_bits {fixed.cluster_bits} is outside "
            f"{_MIN_CLUSTER_BITS}..{_MAX_CLUSTER_BITS}",
            hint="the image header is corrupt; check it with qemu-img check",
        )
    if fixed.compression_type not in _COMPRESSION_TYPES:
        raise Qcow2Error(
            f"{name} uses qcow2 compression type {fixed.compression_type}; Drover reads "
            "zlib (0) and zstd (1)",
            hint=_NOT_READABLE_HINT,
        )


def _read_extensions(area: _FirstCluster, fixed: _Fixed) -> str | None:
    """Walk the header extensions; return the backing file format if one is recorded."""
    offset = (fixed.header_length + 7) & ~7
    backing_format: str | None = None
    while True:
        ext_type, length = struct.unpack(">II", area.get(offset, 8, "header extensions"))
        if ext_type == _EXT_END:
            return backing_format
        data = area.get(offset + 8, length, "header extensions")
        if ext_type == _EXT_BACKING_FORMAT:
            backing_format = data.decode("utf-8", errors="replace")
        offset += 8 + ((length + 7) & ~7)


def _read_backing_file(area: _FirstCluster, fixed: _Fixed, name: str) -> str | None:
    if fixed.backing_file_offset == 0:
        return None
    raw = area.get(fixed.backing_file_offset, fixed.backing_file_size, "backing file name")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Qcow2Error(
            f"{name}: the backing file name in the qcow2 header is not UTF-8 ({raw!r})",
            hint="the image header is corrupt; check it with qemu-img check",
        ) from exc


def _check_l1(header: Qcow2Header, name: str) -> None:
    entry_size = 16 if header.extended_l2 else 8
    if header.l1_size > _MAX_L1_ENTRIES:
        raise Qcow2Error(
            f"{name}: the qcow2 L1 table has {header.l1_size} entries, more than QEMU's "
            f"limit of {_MAX_L1_ENTRIES}",
            hint="the image header is corrupt; check it with qemu-img check",
        )
    covered = header.l1_size * (header.cluster_size // entry_size) * header.cluster_size
    if covered < header.virtual_size:
        raise Qcow2Error(
            f"{name}: the qcow2 L1 table ({header.l1_size} entries) is too small for the "
            f"virtual size {header.virtual_size}",
            hint="the image header is corrupt; check it with qemu-img check",
        )
    if header.l1_size and header.l1_table_offset % header.cluster_size:
        raise Qcow2Error(
            f"{name}: the qcow2 L1 table offset {header.l1_table_offset:#x} is not aligned "
            "to a cluster",
            hint="the image header is corrupt; check it with qemu-img check",
        )
