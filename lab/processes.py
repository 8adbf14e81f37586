"""Drover's own commands as child processes (the lab, servers, workers), for tests and the demo.

They are managed processes of `lab.procs`: own process group, a log file, stopped whole.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from lab import procs
from lab.labfile import lab_json_path, read_lab_json

LAB_START_TIMEOUT_S = 120.0
WORKER_START_TIMEOUT_S = 60.0
SERVICE_START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0


def drover_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


@contextmanager
def drover_process(
    args: list[str],
    log_file: Path,
    ready: Callable[[], bool],
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[procs.ManagedProcess]:
    """`drover ARGS` running until the block ends, returned once `ready()` holds."""
    process = procs.start(
        f"drover {args[0]}", drover_command(*args), log_file, env={**os.environ, **(env or {})}
    )
    try:
        process.wait_ready(ready, timeout_s)
        yield process
    finally:
        procs.stop(process, STOP_GRACE_S)


@contextmanager
def lab_process(state_dir: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """`drover lab up` as a child process; yields the lab.json document."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir.parent / f"{state_dir.name}-lab.log"
    args = ["lab", "up", "--state-dir", str(state_dir), *extra]
    with drover_process(args, log, lab_json_path(state_dir).exists, LAB_START_TIMEOUT_S):
        yield read_lab_json(state_dir)


@contextmanager
def service_process(
    args: list[str], env: dict[str, str], log_file: Path, ready_url: str
) -> Iterator[procs.ManagedProcess]:
    """A drover server command (api, flower), returned once `ready_url` answers HTTP."""
    ready = lambda: _answers_http(ready_url)  # noqa: E731
    with drover_process(args, log_file, ready, SERVICE_START_TIMEOUT_S, env) as process:
        yield process


def _answers_http(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


@contextmanager
def worker_process(
    redis_url: str,
    log_file: Path,
    queues: str = "drover.default",
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    *,
    proxy: bool = False,
) -> Iterator[procs.ManagedProcess]:
    """`drover worker` as a child process (its own process group), returned once it answers
    a broadcast ping (no result backend involved). `proxy`: `drover worker --proxy`, which
    chooses its queue itself; `queues` is then the one it is expected to serve."""
    from shared.settings import load_settings
    from workers.app import create_app

    env = {"DROVER_REDIS_URL": redis_url, "DROVER_LOG__FORMAT": "json", **(env or {})}
    chosen = ["--proxy"] if proxy else ["--queues", queues]
    args = ["worker", *chosen, "--concurrency", str(concurrency)]
    app = create_app(load_settings(redis_url=redis_url))
    ready = lambda: _serves(app, queues.split(",")[0])  # noqa: E731
    try:
        with drover_process(args, log_file, ready, WORKER_START_TIMEOUT_S, env) as process:
            yield process
    finally:
        app.close()


def _serves(app: Any, queue: str) -> bool:
    replies = app.control.inspect(timeout=0.5).active_queues() or {}
    return any(q["name"] == queue for queues in replies.values() for q in queues)
