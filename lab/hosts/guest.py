"""Guest writes, deferred while a disk is held (snapshot, backup, transfer in progress)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lab.dataplane import VolumeRef

from .storage import Storage


@dataclass(frozen=True)
class PendingWrite:
    top: VolumeRef
    offset: int
    data_file: Path  # spooled to disk so large queued writes don't pin memory


class GuestIO:
    """Writes fresh random data as a running guest would, honouring disk holds."""

    def __init__(self, storage: Storage, spool_dir: Path) -> None:
        self._storage = storage
        self._spool_dir = spool_dir
        self._lock = threading.Lock()
        self._holds: defaultdict[str, int] = defaultdict(int)
        self._pending: defaultdict[str, list[PendingWrite]] = defaultdict(list)
        # Serializes applying writes per disk so order is preserved on release.
        self._apply_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def hold(self, disk_id: str) -> None:
        with self._lock:
            self._holds[disk_id] += 1

    def release(self, disk_id: str) -> None:
        with self._lock:
            if self._holds[disk_id] <= 0:
                raise ValueError(f"disk {disk_id} is not held")
            self._holds[disk_id] -= 1
            if self._holds[disk_id]:
                return
            del self._holds[disk_id]
            apply_lock = self._apply_locks[disk_id]
            # Take the apply lock before anyone can write directly, so queued
            # writes land before any write issued after the release.
            apply_lock.acquire()
        try:
            self._flush(disk_id)
        finally:
            apply_lock.release()

    def held(self, disk_id: str) -> bool:
        with self._lock:
            return self._holds.get(disk_id, 0) > 0

    def pending(self, disk_id: str) -> int:
        with self._lock:
            return len(self._pending.get(disk_id, []))

    def write(self, top: VolumeRef, offset: int, length: int) -> None:
        data = os.urandom(length)
        with self._lock:
            if self._holds.get(top.disk_id, 0) > 0:
                self._pending[top.disk_id].append(self._spool(top, offset, data))
                return
            apply_lock = self._apply_locks[top.disk_id]
        with apply_lock:
            self._storage.write(top, offset, data)

    def _spool(self, top: VolumeRef, offset: int, data: bytes) -> PendingWrite:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="write-", dir=self._spool_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return PendingWrite(top, offset, Path(name))

    def _flush(self, disk_id: str) -> None:
        while True:
            with self._lock:
                queue = self._pending.pop(disk_id, [])
            if not queue:
                return
            for item in queue:
                try:
                    target = self._storage.active_volume(item.top)
                    self._storage.write(target, item.offset, item.data_file.read_bytes())
                finally:
                    item.data_file.unlink(missing_ok=True)

    def discard_all(self) -> None:
        """Drop every queued write (used when the lab stops)."""
        with self._lock:
            queues = list(self._pending.values())
            self._pending.clear()
        for queue in queues:
            for item in queue:
                item.data_file.unlink(missing_ok=True)
