"""`drover demo --json`: the whole product path (API, policy, fleet, Flower, restore), every
mode; the snapshots mode ssh keeps for the next incremental are reported apart from leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.modes import AVAILABLE_MODES

pytestmark = pytest.mark.integration
ESTATE = {"app01", "db01", "file01", "web01"}  # the lab's default VMs
BACKUP_KEYS = {"vm", "kind", "backup_id", "bytes_read", "seconds"}


def test_demo_backs_up_restores_and_leaves_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--json", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True, report
    assert "errors" not in report
    assert report["leftovers"] == {
        "snapshots": 0,
        "image_transfers": 0,
        "disk_attachments": 0,
        "backups": 0,
    }
    assert set(report["modes"]) == set(AVAILABLE_MODES) >= {"image_transfer", "ssh"}
    for mode, outcome in report["modes"].items():
        assert "errors" not in outcome, (mode, outcome["errors"])
        kinds = {(b["vm"], b["kind"]) for b in outcome["backups"]}
        assert ("db01", "full") in kinds and ("db01", "incremental") in kinds, mode
        assert {b["vm"] for b in outcome["backups"]} == ESTATE  # no restored VM backed up
        assert all(set(b) == BACKUP_KEYS for b in outcome["backups"])
        assert outcome["restores"] and all(r["verified"] for r in outcome["restores"]), mode
    ssh = report["modes"]["ssh"]
    assert {b["vm"] for b in ssh["backups"] if b["kind"] == "incremental"} == ESTATE
    # each VM keeps exactly the newest ssh backup's snapshot for its next incremental
    assert set(report["kept_snapshots"]) == ESTATE
    assert len(set(report["kept_snapshots"].values())) == len(ESTATE)


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
