"""`drover demo --json`: the whole product path (API, policy, fleet, Flower, restore)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_backs_up_restores_and_leaves_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--json", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["leftovers"] == {
        "snapshots": 0,
        "image_transfers": 0,
        "disk_attachments": 0,
        "backups": 0,
    }
    image_transfer = report["modes"]["image_transfer"]
    kinds = {(b["vm"], b["kind"]) for b in image_transfer["backups"]}
    assert ("db01", "full") in kinds and ("db01", "incremental") in kinds
    assert all(
        set(b) == {"vm", "kind", "backup_id", "bytes_read", "seconds"}
        for b in image_transfer["backups"]
    )
    assert image_transfer["restores"] and all(r["verified"] for r in image_transfer["restores"])


def test_demo_refuses_an_unknown_mode_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--modes", "tape"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "tape" in result.stderr and "choose from" in result.stderr
    assert "Traceback" not in result.stderr
