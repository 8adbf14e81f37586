"""Content-addressed chunks: the digest of the data names it, so equal data is stored once.

The digest is SHA-256 (hardware accelerated on current x86 and ARM CPUs, faster than BLAKE2b
here). Chunks live at `chunks/<first 2 hex>/<digest>`. `put` is idempotent and safe from many
threads and processes at once: writing the same chunk twice stores the same bytes twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache

from shared.errors import ConfigError
from shared.repository.backend import Backend
from shared.repository.codec import decode, encode
from shared.repository.errors import CorruptionError

PREFIX = "chunks/"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


_ZERO_STEP = 4 * 1024 * 1024


@lru_cache(maxsize=16)
def _zeros(length: int) -> bytes:
    return bytes(length)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte is zero; runs at memory speed and stops at the first sign of data."""
    if isinstance(data, bytes | bytearray):
        return data == _zeros(len(data)) if len(data) <= _ZERO_STEP else _is_zero_view(data)
    return _is_zero_view(data)


def _is_zero_view(data: bytes | bytearray | memoryview) -> bool:
    view = memoryview(data).cast("B")
    if not view:
        return True
    if view[0] or view[-1]:
        return False
    for start in range(0, len(view), _ZERO_STEP):
        piece = view[start : start + _ZERO_STEP]
        # bytes.startswith compares with memcmp and copies nothing; == on a view goes item by item
        if not _zeros(len(piece)).startswith(piece):
            return False
    return True


def chunk_name(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ConfigError(
            f"{digest!r} is not a chunk digest", hint="a digest is 64 lowercase hex characters"
        )
    return f"{PREFIX}{digest[:2]}/{digest}"


class ChunkStore:
    """Chunks in a backend: compressed on `put`, verified on `get`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def put(self, data: bytes | memoryview) -> str:
        """Store `data` unless present and return its digest. Zero data is refused."""
        if is_zero(data):
            raise ValueError("zero chunks are not stored: record the index as absent instead")
        digest = digest_of(data)
        name = chunk_name(digest)
        if not self._refresh(name):
            self.backend.save(name, encode(data))
        return digest

    def _refresh(self, name: str) -> bool:
        """Whether the chunk is there. A backend that dates objects has it touched, so that
        garbage collection sees it as in use now (`shared.repository.gc`): a chunk a running
        job is about to reference is never older than that job."""
        touch = getattr(self.backend, "touch", None)
        if touch is None:
            return self.backend.exists(name)
        return bool(touch(name))

    def has(self, digest: str) -> bool:
        return self.backend.exists(chunk_name(digest))

    def get(self, digest: str) -> bytes:
        """The chunk's data, checked against its digest."""
        what = f"chunk {digest} in repository {self.backend.location}"
        data = decode(self.backend.load(chunk_name(digest)), what)
        if digest_of(data) != digest:
            raise CorruptionError(
                f"{what} is corrupt: its content no longer matches its digest",
                hint="run `drover repo check --read-data` and take a new full backup of "
                "affected VMs",
            )
        return data

    def digests(self) -> Iterator[str]:
        for name in self.backend.list(PREFIX):
            digest = name.rpartition("/")[2]
            if _DIGEST.match(digest):
                yield digest

    def size(self, digest: str) -> int:
        """Bytes the chunk takes in the backend (compressed)."""
        return self.backend.stat(chunk_name(digest))

    def remove(self, digest: str) -> None:
        self.backend.remove(chunk_name(digest))
