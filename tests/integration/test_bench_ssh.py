"""`drover bench ssh` on a small disk: both sides read the same volume, the report has both
figures and their ratios, and nothing is left on the engine (no snapshot is kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ssh
from bench.fleet import fleet
from lab.leftovers import count_leftovers

pytestmark = pytest.mark.integration


def test_one_round_compares_the_same_volume_and_leaves_nothing(tmp_path: Path) -> None:
    with fleet(tmp_path) as f:
        vm = f.vm("db01")  # its first disk: qcow2 on the GlusterFS (file) domain
        disk_id = f.disk_ids(vm)[0]
        measured = ssh.best_of_rounds(f, vm, disk_id, tmp_path, rounds=1)  # checks the chains
        report = ssh.report(measured, disk_size=256 << 20, rounds=1)
        assert count_leftovers(f.connection) == {
            "snapshots": 0,
            "image_transfers": 0,
            "disk_attachments": 0,
            "backups": 0,
        }
    volume_bytes = measured.reference.data_bytes
    assert measured.same_cipher.data_bytes == volume_bytes
    for side in ("without_netcat", "with_netcat"):
        outcome = report[side]
        assert outcome["reference"]["name"] == ssh.REFERENCE
        # ours reads the volume's clusters only, the reference the whole qcow2 file
        assert 0 < outcome["ours"]["data_bytes"] <= volume_bytes
        assert outcome["ratio"] > 0 and outcome["job_seconds"] > 0
    assert report["volume"]["format"] == "cow"
    assert report["reference_cipher"] != "unknown"
    assert set(report["requirement"]) == {"with_netcat_ratio_at_least", "met"}
    assert not list(tmp_path.glob("repository-*"))  # every round's repository removed
