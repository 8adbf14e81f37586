"""A private Redis on a free port, with AOF like production, for tests and the demo."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.procs import free_port
from shared.errors import ServiceError

START_TIMEOUT_S = 10.0


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run redis-server in `directory` on a free loopback port; yields its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServiceError("redis-server is not installed", hint="run `make setup`")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (directory / "redis.log").open("ab")
    process = subprocess.Popen(
        [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"redis-server exited with {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"redis-server did not answer on port {port} in {START_TIMEOUT_S:.0f} s")
