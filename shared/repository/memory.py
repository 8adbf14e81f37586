"""An in-memory backend, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from shared.repository.backend import check_name
from shared.repository.errors import ObjectNotFound


class MemoryBackend:
    """Objects in a dict behind a lock; `location` is `memory://<label>`."""

    def __init__(self, label: str = "test") -> None:
        self._objects: dict[str, bytes] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()
        self._location = f"memory://{label}"

    @property
    def location(self) -> str:
        return self._location

    def save(self, name: str, data: bytes) -> None:
        check_name(name)
        with self._lock:
            self._objects[name] = bytes(data)
            self._mtimes[name] = time.time()

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self._get(name)
        end = None if length is None else offset + length
        return data[offset:end]

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects

    def stat(self, name: str) -> int:
        return len(self._get(name))

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            names = [name for name in self._objects if name.startswith(prefix)]
        return iter(names)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise ObjectNotFound(name, self._location)

    def touch(self, name: str) -> bool:
        with self._lock:
            if name not in self._objects:
                return False
            self._mtimes[name] = time.time()
            return True

    def mtime(self, name: str) -> float:
        with self._lock:
            if name not in self._objects:
                raise ObjectNotFound(name, self._location)
            return self._mtimes[name]

    def set_mtime(self, name: str, when: float) -> None:
        """Tests: date an object as if written at `when`."""
        with self._lock:
            self._mtimes[name] = when

    def remove_if_older(self, name: str, cutoff: float) -> bool:
        with self._lock:
            if name not in self._objects or self._mtimes[name] >= cutoff:
                return False
            del self._objects[name]
            del self._mtimes[name]
            return True

    def sync(self) -> None:
        return None

    def _get(self, name: str) -> bytes:
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(name, self._location)
        return data
