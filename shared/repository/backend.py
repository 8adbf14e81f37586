"""The storage interface under the repository: named, immutable objects.

Names are `/`-separated relative paths (`chunks/ab/abcdef...`, `manifests/<id>`). A backend
only stores bytes under names; layout, compression and integrity belong to the layers above,
so a new storage (S3, ...) is one more module implementing `Backend`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from shared.errors import ConfigError
from shared.repository.errors import ObjectNotFound

__all__ = ["Backend", "ObjectNotFound", "check_name"]


@runtime_checkable
class Backend(Protocol):
    """Object storage. Every method is safe to call from several threads and processes."""

    @property
    def location(self) -> str:
        """Where the objects live, for messages (a path or URL)."""
        ...

    def save(self, name: str, data: bytes) -> None:
        """Store `data` under `name`, replacing any object; readers never see a partial one."""
        ...

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object (or `length` bytes of it from `offset`); `ObjectNotFound` if absent."""
        ...

    def exists(self, name: str) -> bool: ...

    def stat(self, name: str) -> int:
        """The object's size in bytes; `ObjectNotFound` if absent."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Names of all objects starting with `prefix`, in no particular order."""
        ...

    def remove(self, name: str) -> None:
        """Delete an object; `ObjectNotFound` if absent."""
        ...

    def sync(self) -> None:
        """Make every save so far durable; a backend whose saves already are does nothing."""
        ...


def check_name(name: str) -> str:
    """Refuse names that could escape the repository or are not object names."""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise ConfigError(
            f"{name!r} is not a valid repository object name",
            hint="this is a bug in the caller: names are relative paths without dot segments",
        )
    return name
