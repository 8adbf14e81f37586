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


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run redis-server in `directory` on a free loopback port; yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServiceError("redis-server is not installed", hint="run `make setup`")
    directory.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    argv = [executable, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--appendonly", "yes", "--save", "", "--protected-mode", "yes"]  # fmt: skip
    process = procs.start("redis-server", argv, directory / "redis.log")
    try:
        process.wait_ready(lambda: _pongs(port), START_TIMEOUT_S)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procs.stop(process)


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
