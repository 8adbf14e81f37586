"""Reading and writing a disk through an engine image transfer, with ovirt-imageio.

`ImageioSource` (download) and `ImageioSink` (upload) open the transfer's `transfer_url`
(the host's daemon) and fall back to its `proxy_url` (the engine) when the host cannot be
reached. Calls are thread-safe: each concurrent caller gets its own connection, up to the
server's `max_readers` / `max_writers` and `max_connections`.

Cleanup never replaces the first error: when the `with` block raised, a failure to close the
connections is logged and the block's error propagates; when the block succeeded, a close
error is raised (as ovirt-imageio's backends do). A constructor that fails after the metadata
connection was opened closes it (quietly) before re-raising.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from shared.engine.models import TransferInfo
from shared.sources.base import Context
from shared.sources.extent import Extent
from shared.sources.imageio_http import (
    CONNECTION_ERRORS,
    ImageioError,
    close_quietly,
    is_http_error,
    open_transfer,
)
from shared.sources.pool import ConnectionPool

T = TypeVar("T")
MAX_CONNECTIONS = 4

__all__ = ["ImageioError", "ImageioSink", "ImageioSource"]


class _Transfer:
    """What source and sink share: the connections and the error translation."""

    writers: ClassVar[bool] = False  # which of the server's limits applies

    def __init__(
        self,
        transfer: TransferInfo,
        ca_file: str | None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        secure: bool = True,
    ) -> None:
        self.transfer_id = transfer.id
        meta, self.url = open_transfer(
            transfer.transfer_url, transfer.proxy_url, ca_file, secure=secure
        )
        try:
            self.via_proxy = self.url != transfer.transfer_url
            server_limit = meta.max_writers if self.writers else meta.max_readers
            # The metadata connection counts against the server's limit too; one more stalls.
            self._pool = ConnectionPool(meta, min(max_connections, max(1, server_limit - 1)))
        except BaseException:
            close_quietly(meta, f"image transfer {self.transfer_id}: the metadata connection")
            raise

    @property
    def connections(self) -> int:
        return self._pool.limit

    def size(self) -> int:
        return int(self._meta(lambda b: b.size(), "reading the size"))

    def _meta(self, fn: Callable[[Any], T], doing: str) -> T:
        return self._guarded(lambda: self._pool.with_meta(fn), doing)

    def _data(self, fn: Callable[[Any], T], doing: str) -> T:
        return self._guarded(lambda: self._pool.run(fn), doing)

    def _guarded(self, call: Callable[[], T], doing: str) -> T:
        try:
            return call()
        except CONNECTION_ERRORS as e:
            raise ImageioError(
                f"image transfer {self.transfer_id}: {doing} at {self.url} failed: {e}",
                hint="the transfer may have been cancelled or timed out; retry",
            ) from e
        except Exception as e:
            if is_http_error(e):
                raise ImageioError(
                    f"image transfer {self.transfer_id}: {doing} refused by {self.url}: {e}",
                    hint="the ticket may have expired; start a new transfer",
                ) from e
            raise

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # the block's error is the one to see
            close_quietly(self, f"image transfer {self.transfer_id}")


class ImageioSource(_Transfer):
    """Read a disk (or a backup's disk) being downloaded through an image transfer."""

    def extents(self, context: Context = "zero") -> list[Extent]:
        """Zero extents (dirty=True: the whole image) or, during an incremental backup,
        dirty extents (changed since the checkpoint)."""
        if context not in ("zero", "dirty"):
            raise ValueError(f"unknown extents context {context!r}")
        raw = self._meta(lambda b: list(b.extents(context)), f"reading {context} extents")
        if context == "zero":
            return [Extent(e.start, e.length, bool(e.zero), True) for e in raw]
        return [Extent(e.start, e.length, bool(e.zero), bool(e.dirty)) for e in raw]

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        """Fill `buf` from `offset`; short only at the end of the image. Bytes read."""
        return int(self._data(lambda b: _readinto(b, offset, buf), f"reading at {offset}"))

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, buf)
        del buf[n:]
        return bytes(buf)


def _readinto(backend: Any, offset: int, buf: bytearray | memoryview) -> int:
    backend.seek(offset)
    return int(backend.readinto(buf))


class ImageioSink(_Transfer):
    """Write a disk being uploaded through an image transfer."""

    writers = True

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._data(lambda b: _write(b, offset, data), f"writing at {offset}")

    def zero(self, offset: int, length: int) -> None:
        self._data(lambda b: _zero(b, offset, length), f"zeroing at {offset}")

    def flush(self) -> None:
        """Make everything written so far durable on the storage."""
        self._meta(lambda b: b.flush(), "flushing")


def _write(backend: Any, offset: int, data: bytes | bytearray | memoryview) -> None:
    backend.seek(offset)
    backend.write(data)


def _zero(backend: Any, offset: int, length: int) -> None:
    backend.seek(offset)
    backend.zero(length)
