"""A worker process group SIGKILLed mid-job: another worker takes the job over within
minutes (not the broker's hours), the backup restores bit-exact, nothing is left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from bench.fleet import queue_lab_backup
from lab.guest_client import guest_write
from lab.processes import worker_process
from shared.engine.client import EngineClient
from shared.repository.repository import Repository
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import wait_job
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers
from tests.e2e.test_ssh_mode import active_lvs
from tests.faults.conftest import FAST_REDELIVERY, QUEUES
from workers.resources import engine_settings

pytestmark = pytest.mark.integration
MiB = 1 << 20
CASES = [  # (mode, VM): image transfer of a raw NFS disk; ssh of app01 (an LV, raw, on block)
    pytest.param("image_transfer", "web01", id="image_transfer"),
    pytest.param("ssh", "app01", id="ssh"),
]


def wait_until(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def copying(store: StateStore, job_id: str) -> bool:
    """A disk is half copied (for ssh on block: its LV is active)."""
    job = store.job(job_id)
    return job is not None and any(0 < d.done_chunks < d.planned_chunks for d in job.disks)


@pytest.mark.parametrize(("mode", "vm_name"), CASES)
def test_a_job_whose_worker_died_as_a_whole_finishes_on_another_worker(
    mode: str,
    vm_name: str,
    lab: dict[str, Any],
    broker: str,
    store: StateStore,
    app: Celery,
    connection: Any,
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repository"
    with EngineClient.connect(engine_settings("lab", store)) as engine:
        vm = engine.find_vms(names=[vm_name])[0]
        disk_ids = [d.id for d in vm.disks]
        guest_write(Path(lab["state_dir"]), vm_name, 0, 16 * MiB, 192 * MiB)
        lvs_before = active_lvs(lab)
        with worker_process(broker, tmp_path / "first.log", QUEUES, 2, FAST_REDELIVERY) as first:
            job_id = queue_lab_backup(
                app, store, engine, vm.id, disk_ids, str(repo), quiesce=False, mode=mode
            )
            wait_until(
                lambda: copying(store, job_id) and (mode != "ssh" or active_lvs(lab) - lvs_before),
                "the transfer to be half done (ssh: with an LV it activated)",
            )
            os.killpg(first.pid, signal.SIGKILL)
            killed = time.monotonic()
        with worker_process(broker, tmp_path / "second.log", QUEUES, 2, FAST_REDELIVERY):
            job = wait_job(store, job_id, timeout_s=180)
            taken_over_s = time.monotonic() - killed
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert taken_over_s < 90
    backup = Repository.open(str(repo))
    for disk_id in disk_ids:
        assert backup.image_sha256(job_id, disk_id) == disk_sha256(
            lab, connection, disk_id, tmp_path
        )
    assert no_leftovers(connection)
    assert store.vm_lock_holder(vm.id) == ""
    assert active_lvs(lab) == lvs_before  # an LV the dead worker activated is not left active
