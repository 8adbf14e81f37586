"""`drover bench attach` on a small disk (the lab's default size, one round): ours and `dd` read
the same device, the bench disk as of a snapshot attached to a fit proxy VM of its cluster; the
report has both figures, their ratio, the requirement and the backup job's figures; nothing is
left attached to the proxy, and no snapshot is left on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import attach, transfer
from bench.fleet import fleet
from lab.leftovers import count_leftovers

pytestmark = pytest.mark.integration
DISK_SIZE = 256 << 20  # the lab's default disk size
NOTHING = {"snapshots": 0, "image_transfers": 0, "disk_attachments": 0, "backups": 0}
REPORT_KEYS = {
    "benchmark",
    "ours",
    "reference",
    "ratio",
    "required_ratio",
    "met",
    "device",
    "connections",
    "chunk_size",
    "backup_job",
    "disk_size",
    "rounds",
}


def test_one_round_reads_the_attached_device_and_leaves_nothing(tmp_path: Path) -> None:
    with fleet(tmp_path) as f:
        vm = f.vm(transfer.BENCH_VM)
        disk_id = f.disk_ids(vm)[0]
        repository = tmp_path / "repository-attach"
        chunk_size = attach.repository_chunk_size(repository)
        measured = attach.best_of_rounds(f, vm, disk_id, 1, chunk_size)
        job = attach.backup_job(f, vm, disk_id, repository)
        report = attach.report(measured, job, DISK_SIZE, rounds=1)
        assert count_leftovers(f.connection) == NOTHING
        by_id = Path(measured.device.proxy["root"]) / "dev" / "disk" / "by-id"
        assert not list(by_id.glob("*")), "nothing is left attached to the proxy VM"
        cluster = f.cluster_of(vm)
    assert set(report) == REPORT_KEYS and report["benchmark"] == "attach"
    device = report["device"]
    assert device["cluster"] == cluster and measured.device.proxy["virtio_scsi"] is True
    assert device["size"] == DISK_SIZE and disk_id in device["path"]
    assert device["resolved"] != device["path"]  # the file behind the link, cache dropped
    ours, reference = report["ours"], report["reference"]
    assert ours["data_bytes"] == reference["data_bytes"] == DISK_SIZE  # both read it whole
    assert reference["name"] == attach.REFERENCE
    assert ours["data_chunks"] > 0 and ours["zero_chunks"] > 0  # the lab's disks are sparse
    assert ours["data_chunks"] + ours["zero_chunks"] == DISK_SIZE // report["chunk_size"]
    assert report["ratio"] > 0 and report["required_ratio"] == attach.REQUIRED_RATIO
    assert report["met"] is (report["ratio"] >= attach.REQUIRED_RATIO)
    backup = report["backup_job"]
    assert backup["mode"] == "disk_attachment" and backup["disk_size"] == DISK_SIZE
    assert 0 < backup["bytes_stored"] < DISK_SIZE  # the data chunks only
    assert backup["job_seconds"] > 0 and backup["mib_s"] > 0 and backup["worker"]
    assert not repository.exists()  # the job's repository is removed
