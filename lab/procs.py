"""Managed child processes: start in their own process group, wait until ready, stop.

Every process started through `start()` is kept in a registry until it is stopped, so
`stop_all()` can guarantee that nothing (qemu-nbd, imageio, sshd) is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from shared.errors import ServiceError

DEFAULT_GRACE_S = 5.0
_POLL_S = 0.02


class ProcessError(ServiceError):
    """A managed process failed to start or exited unexpectedly."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server started next.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken by any outgoing connection before the server binds it.
    """
    low = _ephemeral_range_start()
    for _ in range(200):
        port = random.randrange(PRIVATE_PORTS_START, low)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PRIVATE_PORTS_START = 20000


def _ephemeral_range_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, PRIVATE_PORTS_START + 1000)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_socket_ready(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process in its own process group, logging to `log_file`."""

    def __init__(self, name: str, argv: Sequence[str], log_file: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running():
                raise ProcessError(
                    f"{self.name} exited with {self.popen.returncode} before it was ready; "
                    f"log {self.log_file}:\n{log_tail(self.log_file)}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name} not ready after {timeout_s}s; "
                    f"log {self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(_POLL_S)

    def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """SIGTERM the group, SIGKILL it after `grace_s`, and reap the child."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
        # The leader may be gone while other group members linger.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signo)


_registries: weakref.WeakSet[ProcessRegistry] = weakref.WeakSet()


class ProcessRegistry:
    """Keeps every live managed process so they can all be stopped.

    Every registry is also known to the module, so `lab.procs.stop_all()` (run at
    interpreter exit too) stops the processes of all registries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, ManagedProcess] = {}
        _registries.add(self)

    def start(self, name: str, argv: Sequence[str], log_file: Path,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_file, env=env, cwd=cwd)
        with self._lock:
            self._procs[proc.pid] = proc
        return proc

    def stop(self, proc: ManagedProcess, grace_s: float = DEFAULT_GRACE_S) -> None:
        try:
            proc.stop(grace_s)
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)

    def live(self) -> list[ManagedProcess]:
        with self._lock:
            return list(self._procs.values())

    def stop_all(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        procs = self.live()
        threads = [threading.Thread(target=self.stop, args=(p, grace_s)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


registry = ProcessRegistry()


def start(name: str, argv: Sequence[str], log_file: Path,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> ManagedProcess:
    """Start `argv` as a managed process in the global registry."""
    return registry.start(name, argv, log_file, env=env, cwd=cwd)


def stop(proc: ManagedProcess, grace_s: float = DEFAULT_GRACE_S) -> None:
    registry.stop(proc, grace_s)


def stop_all(grace_s: float = DEFAULT_GRACE_S) -> None:
    """Stop every managed process of every registry."""
    for reg in list(_registries):
        reg.stop_all(grace_s)


atexit.register(stop_all, 1.0)
