"""Checksums of whole disk images, zeros included, to prove a restore bit-exact."""

from __future__ import annotations

import hashlib
from typing import Any

READ_SIZE = 4 * 1024 * 1024
_ZEROS = bytes(READ_SIZE)


def image_sha256(source: Any) -> str:
    """sha256 of everything a disk source serves, reading only its data extents."""
    digest = hashlib.sha256()
    buffer = bytearray(READ_SIZE)
    for extent in source.extents("zero"):
        if extent.zero:
            _hash_zeros(digest, extent.length)
        else:
            _hash_data(digest, source, extent.start, extent.length, buffer)
    return digest.hexdigest()


def _hash_zeros(digest: Any, length: int) -> None:
    while length:
        step = min(length, READ_SIZE)
        digest.update(_ZEROS[:step])
        length -= step


def _hash_data(digest: Any, source: Any, start: int, length: int, buffer: bytearray) -> None:
    view = memoryview(buffer)
    offset, end = start, start + length
    while offset < end:
        step = min(READ_SIZE, end - offset)
        n = source.readinto(offset, view[:step])
        digest.update(view[:n])
        offset += n
