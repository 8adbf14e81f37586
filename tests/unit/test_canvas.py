"""The backup canvas: the disks' transfers side by side in a chord, or one after the other
for a mode that reads one disk at a time (disk attachment)."""

from __future__ import annotations

from celery import Celery

from shared.jobs import BackupRequest
from workers.canvas import FINALIZE, PREPARE, START, TRANSFER, backup_canvas


def request(mode: str) -> BackupRequest:
    return BackupRequest("job", "p", "m", "vm", "vm01", "/repo", mode=mode, disk_ids=("a", "b"))


def names(canvas: object) -> list[str]:
    return [str(task["task"]) for task in canvas.tasks]  # type: ignore[attr-defined]


def test_disk_attachment_chains_its_disks_in_turn() -> None:
    canvas = backup_canvas(Celery("t"), request("disk_attachment"), "proxy.cluster1")
    assert names(canvas) == [PREPARE, START, TRANSFER, TRANSFER, FINALIZE]
    transfers = canvas.tasks[2:4]
    assert [t.args for t in transfers] == [("job", "a"), ("job", "b")]
    assert all(t.options["queue"] == "proxy.cluster1" and t.immutable for t in transfers)
    finalize = canvas.tasks[-1]
    assert finalize.args == ([], "job") and finalize.immutable


def test_image_transfer_runs_its_disks_in_a_chord() -> None:
    canvas = backup_canvas(Celery("t"), request("image_transfer"), "transfer.image")
    header = canvas.tasks[2]
    assert [t.args for t in header.tasks] == [("job", "a"), ("job", "b")]
    assert header.body["task"] == FINALIZE
