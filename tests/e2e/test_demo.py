"""`drover demo --json`: the whole product path (API, policy, fleet, Flower, restore), every
mode; the snapshots mode ssh keeps for the next incremental are reported apart from leftovers.
Mode disk_attachment (full only) runs on one proxy worker per cluster, and the report names the
worker and proxy VM that moved each disk. One demo run serves the tests of this module."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from shared.modes import AVAILABLE_MODES

ESTATE = {"app01", "db01", "file01", "web01"}  # the lab's default VMs
CLUSTERS = {"app01": "cluster1", "web01": "cluster1", "db01": "cluster2", "file01": "cluster2"}
BACKUP_KEYS = {"vm", "kind", "backup_id", "bytes_read", "seconds", "disks"}
FULL_ONLY = {"disk_attachment"}
DEMO_TIMEOUT_S = 1200
# the first test to use `report` runs the demo in its setup
pytestmark = [pytest.mark.integration, pytest.mark.timeout(DEMO_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    state_dir = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-3000:]
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_demo_backs_up_restores_and_leaves_nothing(report: dict[str, Any]) -> None:
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
        assert ("db01", "full") in kinds, mode
        assert (("db01", "incremental") in kinds) is (mode not in FULL_ONLY), mode
        assert {b["vm"] for b in outcome["backups"]} == ESTATE  # no restored VM backed up
        assert all(set(b) == BACKUP_KEYS for b in outcome["backups"])
        assert all(d["worker"] for b in outcome["backups"] for d in b["disks"]), mode
        assert outcome["restores"] and all(r["verified"] for r in outcome["restores"]), mode
    ssh = report["modes"]["ssh"]
    assert {b["vm"] for b in ssh["backups"] if b["kind"] == "incremental"} == ESTATE
    # each VM keeps exactly the newest ssh backup's snapshot for its next incremental
    assert set(report["kept_snapshots"]) == ESTATE
    assert len(set(report["kept_snapshots"].values())) == len(ESTATE)


def test_demo_moves_each_disk_through_its_own_clusters_proxy(report: dict[str, Any]) -> None:
    """`drover demo --modes disk_attachment` is this part of the whole demo."""
    outcome = report["modes"]["disk_attachment"]
    proxies = outcome["proxy_workers"]  # cluster -> the proxy VM its worker runs in
    assert set(proxies) == {"cluster1", "cluster2"}
    for backup in outcome["backups"]:
        proxy = proxies[CLUSTERS[backup["vm"]]]
        assert backup["kind"] == "full" and backup["disks"], backup
        for disk in backup["disks"]:
            assert disk["proxy_vm"] == proxy and proxy in disk["worker"], backup
    assert len(outcome["restores"]) == 1 and outcome["restores"][0]["verified"]


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
