"""Drover's own commands as child processes (the lab, workers), for tests and the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from lab.labfile import wait_for_lab_json
from shared.errors import DroverError, ServiceError

LAB_START_TIMEOUT_S = 120.0
WORKER_START_TIMEOUT_S = 60.0
SERVICE_START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0


def drover_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def start_drover(
    args: list[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            drover_command(*args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL the whole process group after a grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
    _kill_group(process.pid)
    process.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextmanager
def lab_process(state_dir: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """`drover lab up` as a child process; yields the lab.json document."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir.parent / f"{state_dir.name}-lab.log"
    process = start_drover(["lab", "up", "--state-dir", str(state_dir), *extra], log)
    try:
        try:
            document = wait_for_lab_json(
                state_dir, LAB_START_TIMEOUT_S, lambda: process.poll() is None
            )
        except DroverError as e:
            raise ServiceError(f"{e}; the lab's log is {log}") from e
        yield document
    finally:
        stop_process(process)


@contextmanager
def service_process(
    args: list[str], env: dict[str, str], log_file: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A drover server command (api, flower), returned once `ready_url` answers HTTP."""
    process = start_drover(args, log_file, env)
    try:
        _wait_http(ready_url, process, log_file)
        yield process
    finally:
        stop_process(process)


def _wait_http(url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(
                f"`drover` exited with {process.returncode} at start; see {log_file}"
            )
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise ServiceError(f"{url} did not answer in {SERVICE_START_TIMEOUT_S:.0f} s; see {log_file}")


@contextmanager
def worker_process(
    redis_url: str, log_file: Path, queues: str = "drover.default", concurrency: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """`drover worker` as a child process, returned once it answers a ping."""
    env = {"DROVER_REDIS_URL": redis_url, "DROVER_LOG__FORMAT": "json"}
    args = ["worker", "--queues", queues, "--concurrency", str(concurrency)]
    process = start_drover(args, log_file, env)
    try:
        wait_for_worker(redis_url, queues.split(",")[0], process)
        yield process
    finally:
        stop_process(process)


def wait_for_worker(redis_url: str, queue: str, process: subprocess.Popen[bytes]) -> None:
    """Until the worker answers a broadcast ping (no result backend involved)."""
    from shared.settings import load_settings
    from workers.app import create_app

    app = create_app(load_settings(redis_url=redis_url))
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(f"the worker exited with {process.returncode} at start")
            if _serves(app, queue):
                return
        raise ServiceError(f"the worker did not answer in {WORKER_START_TIMEOUT_S:.0f} s")
    finally:
        app.close()


def _serves(app: Any, queue: str) -> bool:
    replies = app.control.inspect(timeout=0.5).active_queues() or {}
    return any(q["name"] == queue for queues in replies.values() for q in queues)
