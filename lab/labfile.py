"""`lab.json`: how clients find a running lab (engine URL, CA, credentials, hosts)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.errors import DroverError

LAB_JSON = "lab.json"


def lab_json_path(state_dir: Path) -> Path:
    return Path(state_dir) / LAB_JSON


def write_lab_json(state_dir: Path, document: dict[str, Any]) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = lab_json_path(state_dir)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".lab.json.")
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    return path


def read_lab_json(state_dir: Path) -> dict[str, Any]:
    path = lab_json_path(state_dir)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise LabNotRunning(
            f"no lab is running in {state_dir} ({LAB_JSON} is missing)",
            hint=f"start one with: drover lab up --state-dir {state_dir}",
        ) from None


def wait_for_lab_json(state_dir: Path, timeout_s: float, alive: Any = None) -> dict[str, Any]:
    """Wait until `lab up` has written lab.json; `alive()` False means it died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if lab_json_path(state_dir).exists():
            return read_lab_json(state_dir)
        if alive is not None and not alive():
            raise LabNotRunning(f"the lab in {state_dir} stopped before it was ready")
        time.sleep(0.1)
    raise LabNotRunning(f"the lab in {state_dir} was not ready after {timeout_s:.0f} s")


class LabNotRunning(DroverError):
    pass
