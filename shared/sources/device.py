"""A disk attached to this node, read or written as a local block device.

A block device tells nothing of which areas hold data, so a backup reads all of it at
device speed, in large sequential reads on a few threads; zero chunks are dropped by the
copy routine, not stored. A restore writes the data and, where the disk may hold stale
bytes, zeros.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from shared.backup.plan import Span
from shared.sources.extent import Extent

READERS = 4
WRITERS = 4
_ZEROS = bytes(4 << 20)


class _Device:
    def __init__(self, path: Path, flags: int) -> None:
        self.path = path
        self._fd = os.open(path, flags | os.O_CLOEXEC)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceSource(_Device):
    connections = READERS

    def __init__(self, path: Path) -> None:
        super().__init__(path, os.O_RDONLY)
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def extents(self, context: str = "zero") -> list[Extent]:
        return [Extent(0, self._size, False, True)]

    def data_spans(self) -> list[Span]:
        return [Span(0, self._size)]

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        n = os.preadv(self._fd, [buf], offset)
        # read once: the page cache would otherwise fill with a whole disk
        os.posix_fadvise(self._fd, offset, n, os.POSIX_FADV_DONTNEED)
        return n

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, buf)
        return bytes(buf[:n])


class DeviceSink(_Device):
    connections = WRITERS

    def __init__(self, path: Path) -> None:
        super().__init__(path, os.O_WRONLY)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.pwritev(self._fd, [view], offset)
            view, offset = view[n:], offset + n

    def zero(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            n = min(len(_ZEROS), end - offset)
            self.write(offset, memoryview(_ZEROS)[:n])
            offset += n

    def flush(self) -> None:
        os.fsync(self._fd)
