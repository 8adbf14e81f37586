"""An extent of a disk image, as imageio reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Extent:
    """`length` bytes at `start`.

    zero:  the area reads as zeroes.
    dirty: the area belongs to this backup: changed since the checkpoint (dirty context),
           or always True when the extents describe the whole image (zero context).
    """

    start: int
    length: int
    zero: bool
    dirty: bool

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def data(self) -> bool:
        """True when the area must be read (part of the backup and not known zero)."""
        return self.dirty and not self.zero

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "length": self.length, "zero": self.zero, "dirty": self.dirty}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Extent:
        return cls(int(d["start"]), int(d["length"]), bool(d["zero"]), bool(d.get("dirty", True)))
