"""How an object's bytes are stored: a 1-byte header, then the payload.

Header 0x00: payload stored as is (compression did not help). Header 0x01: a zstd frame (level 1)
with the content size in its header. zstd contexts are not thread-safe, so each thread keeps its
own; the functions here are safe to call from any number of threads.
"""

from __future__ import annotations

import threading

import zstandard

from shared.repository.errors import CorruptionError

RAW = b"\x00"
ZSTD = b"\x01"
LEVEL = 1
PROBE = 64 * 1024
# Compressing must save at least this fraction to be worth a decompression on restore.
MIN_SAVING = 1 / 32

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=LEVEL)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def _worth_it(packed: int, original: int) -> bool:
    return packed <= original * (1 - MIN_SAVING)


def encode(data: bytes | memoryview) -> bytes:
    """Compress when it pays; a 64 KiB probe skips incompressible data cheaply."""
    view = memoryview(data)
    compressor = _compressor()
    if len(view) > PROBE and not _worth_it(len(compressor.compress(view[:PROBE])), PROBE):
        return RAW + view
    packed = compressor.compress(view)
    if _worth_it(len(packed), len(view)):
        return ZSTD + packed
    return RAW + view


def decode(blob: bytes, what: str) -> bytes:
    """The original bytes of a stored object; `CorruptionError` naming `what` if unreadable."""
    header, payload = blob[:1], memoryview(blob)[1:]
    if header == RAW:
        return payload.tobytes()
    if header == ZSTD:
        try:
            return _decompressor().decompress(payload)
        except zstandard.ZstdError as exc:
            raise _corrupt(what, f"zstd could not decompress it ({exc})") from exc
    raise _corrupt(what, f"unknown header byte {header!r}")


def _corrupt(what: str, reason: str) -> CorruptionError:
    return CorruptionError(
        f"{what} is corrupt: {reason}",
        hint="run `drover repo check --read-data` and take a new full backup of affected VMs",
    )
