"""A backend on a local or mounted (NFS) filesystem.

Objects are files under the root, named by their object names. A save writes a hidden temporary
file in the target directory, fsyncs it, renames it into place and fsyncs the directory, so a
reader (or a crash) sees the old object, the new one or none, never a partial one. Two processes
saving the same name at once both succeed; the last rename wins.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shared.errors import DroverError
from shared.repository.backend import check_name
from shared.repository.errors import ObjectNotFound

_TMP_PREFIX = ".tmp-"


class LocalBackend:
    """Objects as files under `root`; `fsync=False` trades crash safety for speed (tests)."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._unsynced_dirs: set[Path] = set()
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.root)

    def save(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(6)}")
        try:
            self._write_tmp(tmp, data)
            os.replace(tmp, path)
            self._sync_name(path.parent)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise _os_error("write", name, self.location, exc) from exc

    def sync(self) -> None:
        """Make every rename since the last sync durable (one fsync per directory)."""
        with self._lock:
            directories, self._unsynced_dirs = self._unsynced_dirs, set()
        for directory in directories:
            _fsync_dir(directory)

    def _sync_name(self, directory: Path) -> None:
        """The data is already on disk; a lost rename only loses a chunk written again later,
        so chunk directories are synced in batches by `sync()`, everything else at once."""
        if not self.fsync:
            return
        if directory.parent.name == "chunks" and directory.parent.parent == self.root:
            with self._lock:
                self._unsynced_dirs.add(directory)
        else:
            _fsync_dir(directory)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as file:
                if offset:
                    file.seek(offset)
                return file.read() if length is None else file.read(length)
        except FileNotFoundError as exc:
            raise ObjectNotFound(name, self.location) from exc
        except OSError as exc:
            raise _os_error("read", name, self.location, exc) from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def stat(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(name, self.location) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        for name in _walk(start, f"{base}/" if base else ""):
            if name.startswith(prefix):
                yield name

    def remove(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError as exc:
            raise ObjectNotFound(name, self.location) from exc
        except OSError as exc:
            raise _os_error("remove", name, self.location, exc) from exc

    # Garbage collection (see shared.repository.gc): dates of objects, and removal that loses
    # no race with a writer that touches the object at the same moment.

    def touch(self, name: str) -> bool:
        """Set the object's modification time to now; False when it does not exist."""
        try:
            os.utime(self._path(name))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error("touch", name, self.location, exc) from exc
        return True

    def mtime(self, name: str) -> float:
        try:
            return self._path(name).stat().st_mtime
        except FileNotFoundError as exc:
            raise ObjectNotFound(name, self.location) from exc

    def remove_if_older(self, name: str, cutoff: float) -> bool:
        """Remove the object unless it was written or touched at or after `cutoff`.

        The object is first renamed aside (atomic: a writer's `touch` now fails and it saves
        the object again), then its date is read from the renamed inode, which carries any
        touch that came before the rename. A fresh object is linked back (unless a writer
        already saved it again), a stale one unlinked. So no touch is ever lost."""
        path = self._path(name)
        aside = path.with_name(f"{_TMP_PREFIX}gc-{path.name}-{secrets.token_hex(6)}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error("remove", name, self.location, exc) from exc
        try:
            if os.stat(aside).st_mtime >= cutoff:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                return False
            return True
        finally:
            _unlink_quietly(aside)

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files that writers killed mid-save left behind; returns how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.rglob(f"{_TMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _write_tmp(self, tmp: Path, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            self._make_dirs(tmp.parent)
            fd = os.open(tmp, flags, 0o644)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fdatasync(fd)  # data and size; timestamps need no journal commit
                # Written objects are rarely read back soon: keep the page cache for the
                # disks being backed up (as Borg does for its segments).
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                _fsync_dir(path.parent)


def _walk(directory: Path, relative: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), f"{relative}{entry.name}/")
        else:
            yield f"{relative}{entry.name}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _os_error(action: str, name: str, location: str, exc: OSError) -> DroverError:
    hint = "check that the repository filesystem is mounted, writable and has space"
    if exc.errno == errno.ENOSPC:
        hint = "free space in the repository filesystem or move the repository"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "give the Drover user write access to the repository directory"
    return DroverError(
        f"could not {action} {name!r} in repository {location}: {exc.strerror or exc}",
        hint=hint,
    )
