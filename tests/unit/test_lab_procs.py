"""Managed processes: readiness, clear failures with the log tail, no leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import procs


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_wait_ready_on_port_and_stop(tmp_path: Path) -> None:
    registry = procs.ProcessRegistry()
    port = procs.free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    proc = registry.start("http", server, tmp_path / "http.log")
    proc.wait_ready(lambda: procs.port_open(port), timeout_s=10)
    registry.stop(proc)
    assert not registry.live()
    assert gone(proc.pid)


def test_failure_reports_log_tail(tmp_path: Path) -> None:
    registry = procs.ProcessRegistry()
    proc = registry.start("bad", ["sh", "-c", "echo boom-marker >&2; exit 3"],
                          tmp_path / "bad.log")
    with pytest.raises(procs.ProcessError, match="boom-marker"):
        proc.wait_ready(lambda: False, timeout_s=5)
    registry.stop(proc)


def test_timeout(tmp_path: Path) -> None:
    registry = procs.ProcessRegistry()
    proc = registry.start("sleep", ["sleep", "30"], tmp_path / "sleep.log")
    with pytest.raises(procs.ProcessError, match="not ready"):
        proc.wait_ready(lambda: False, timeout_s=0.2)
    registry.stop_all()
    assert gone(proc.pid)


def test_stop_all_kills_whole_group_and_stubborn_children(tmp_path: Path) -> None:
    registry = procs.ProcessRegistry()
    pid_file = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 30 & echo $! > {pid_file}; wait"
    proc = registry.start("stubborn", ["sh", "-c", script], tmp_path / "s.log")
    proc.wait_ready(pid_file.exists, timeout_s=5)
    time.sleep(0.05)
    child = int(pid_file.read_text())
    started = time.monotonic()
    registry.stop_all(grace_s=0.3)
    assert time.monotonic() - started < 5
    assert gone(proc.pid)
    deadline = time.monotonic() + 2
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)


def test_free_port_is_bindable() -> None:
    import socket

    port = procs.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert os.getpid()


def test_interpreter_exit_stops_every_registry(tmp_path: Path) -> None:
    """Run in a child interpreter: the global stop_all would hit this session's labs too."""
    script = f"""
import sys
from pathlib import Path
from lab import procs
first, second = procs.ProcessRegistry(), procs.ProcessRegistry()
a = first.start("a", ["sleep", "30"], Path({str(tmp_path)!r}) / "a.log")
b = second.start("b", ["sleep", "30"], Path({str(tmp_path)!r}) / "b.log")
print(a.pid, b.pid)
"""  # no explicit stop: the atexit hook must do it
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=30, cwd=Path(__file__).parents[2]).stdout
    pids = [int(p) for p in out.split()]
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


def test_free_ports_stay_out_of_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {procs.free_port() for _ in range(20)}
    assert all(procs.PRIVATE_PORTS_START <= port < max(low, 21000) for port in ports)
