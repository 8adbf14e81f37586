"""`lab.json`: how clients find a running lab (engine URL, CA, credentials, hosts).

Written by `lab.runner` (`_lab_document`); its fields are described in the README ("The lab").
Each `hosts` entry is a `lab.dataplane.HostEndpoints`; all paths are absolute.
"""

from __future__ import annotations

import json
import os
import tempfile
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


class LabNotRunning(DroverError):
    pass
