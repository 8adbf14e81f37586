"""qemu-nbd exports on short UNIX socket paths, managed by a process registry."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ovirt_imageio._internal import nbd as nbd_client

from lab import procs

# Tried in order; the first one qemu-nbd accepts on this system is remembered.
_CACHE_MODES: list[list[str]] = [
    ["--cache=none", "--aio=native"],
    ["--cache=none"],
    ["--cache=writeback"],
]


def handshake_ok(socket: Path) -> bool:
    """qemu-nbd listens before it opens the image: only a handshake proves readiness."""
    if not socket.exists():
        return False
    try:
        with nbd_client.Client(nbd_client.UnixAddress(str(socket))):
            return True
    except (OSError, nbd_client.Error):
        return False


def export_size(socket: Path) -> int:
    """The size qemu-nbd announces (for a "cow" export: the qcow2 file size)."""
    with nbd_client.Client(nbd_client.UnixAddress(str(socket))) as c:
        return int(c.export_size)


@dataclass(frozen=True)
class ExportSpec:
    """What to serve: a filename (or `json:{...}`) opened with format `fmt`."""

    image: str
    fmt: str | None  # None for json: filenames that carry their own driver
    writable: bool = False
    bitmap: str | None = None


class NbdExport:
    """A running qemu-nbd; `nbd_url` is what an imageio ticket's url points at.

    `size` is the export size in bytes: the virtual size for guest data exports, the
    file size for a "cow" export of the raw qcow2 bytes.
    """

    def __init__(self, proc: procs.ManagedProcess, sock_dir: Path, registry: procs.ProcessRegistry,
                 on_close: Callable[[], None] | None = None) -> None:
        self.proc = proc
        self.sock_dir = sock_dir
        self.socket = sock_dir / "nbd.sock"
        self.nbd_url = f"nbd:unix:{self.socket}"
        self.size = export_size(self.socket)
        self._registry = registry
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._registry.stop(self.proc)
        finally:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> NbdExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NbdServer:
    """Starts qemu-nbd exports; remembers which cache mode works here."""

    def __init__(self, registry: procs.ProcessRegistry, log_dir: Path) -> None:
        self._registry = registry
        self._log_dir = log_dir
        self._counter = itertools.count(1)
        self._cache_modes = list(_CACHE_MODES)
        self._lock = threading.Lock()

    def start(self, spec: ExportSpec, on_close: Callable[[], None] | None = None) -> NbdExport:
        failed: list[list[str]] = []
        errors: list[str] = []
        for mode in self._modes():
            sock_dir = Path(tempfile.mkdtemp(prefix="dl-"))
            try:
                proc = self._spawn(spec, mode, sock_dir)
            except procs.ProcessError as e:
                shutil.rmtree(sock_dir, ignore_errors=True)
                failed.append(mode)
                errors.append(str(e))
                continue
            # A later mode worked: the earlier ones are not supported here.
            self._forget(failed)
            try:
                return NbdExport(proc, sock_dir, self._registry, on_close)
            except BaseException:
                self._registry.stop(proc, grace_s=1)
                shutil.rmtree(sock_dir, ignore_errors=True)
                raise
        raise procs.ProcessError(f"cannot export {spec.image}: {errors[-1] if errors else ''}")

    def _modes(self) -> list[list[str]]:
        with self._lock:
            return list(self._cache_modes)

    def _forget(self, modes: list[list[str]]) -> None:
        with self._lock:
            for mode in modes:
                if len(self._cache_modes) > 1 and mode in self._cache_modes:
                    self._cache_modes.remove(mode)

    def _spawn(self, spec: ExportSpec, mode: list[str], sock_dir: Path) -> procs.ManagedProcess:
        socket = sock_dir / "nbd.sock"
        argv = ["qemu-nbd", "--socket", str(socket), "--persistent", "--shared=8",
                "--allocation-depth", *mode]
        if spec.fmt is not None:
            argv += ["--format", spec.fmt]
        if not spec.writable:
            argv.append("--read-only")
        if spec.bitmap is not None:
            argv += ["--bitmap", spec.bitmap]
        argv.append(spec.image)
        log_file = self._log_dir / f"qemu-nbd-{next(self._counter)}.log"
        proc = self._registry.start("qemu-nbd", argv, log_file)
        try:
            proc.wait_ready(lambda: handshake_ok(socket), timeout_s=10)
        except procs.ProcessError:
            self._registry.stop(proc, grace_s=1)
            raise
        return proc
