"""The one small interface every disk source and sink follows (imageio's backend shape)."""

from __future__ import annotations

from typing import Literal, Protocol

from shared.sources.extent import Extent

Context = Literal["zero", "dirty"]


class DiskSource(Protocol):
    def size(self) -> int:
        """Virtual size in bytes."""
        ...

    def extents(self, context: Context = "zero") -> list[Extent]:
        """The whole image ("zero") or the areas changed since the checkpoint ("dirty")."""
        ...

    def readinto(self, offset: int, buf: bytearray | memoryview) -> int:
        """Fill `buf` from `offset` (short only at the end of the image); bytes read."""
        ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class DiskSink(Protocol):
    def size(self) -> int: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def zero(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
