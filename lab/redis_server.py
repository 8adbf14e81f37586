"""A private Redis on a free port, with AOF like production, for tests and the demo."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab import procs
from shared.errors import ServiceError

START_TIMEOUT_S = 10.0


class RedisServer:
    """redis-server in `directory` on a free loopback port; `restart()` keeps port and AOF."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServiceError("redis-server is not installed", hint="run `make setup`")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = procs.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._argv = [executable, "--bind", "127.0.0.1", "--port", str(self.port),
                      "--dir", str(directory), "--appendonly", "yes", "--save", "",
                      "--protected-mode", "yes"]  # fmt: skip
        self._process: procs.ManagedProcess | None = None

    def start(self) -> None:
        self._process = procs.start("redis-server", self._argv, self.directory / "redis.log")
        self._process.wait_ready(lambda: _pongs(self.port), START_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF and exits, as on a service restart."""
        if self._process is not None:
            procs.stop(self._process)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run redis-server in `directory` on a free loopback port; yields its URL."""
    with running_redis(directory) as server:
        yield server.url


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
