"""A restore whose worker process is SIGKILLed mid-upload is re-delivered, removes what the
killed attempt made (recorded in the job's journal) and restores again: one VM, verified,
no floating disk, no open transfer (it used to fail with "name already in use" and leave an
empty VM, a half-written disk and an open upload)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from lab.processes import worker_process
from shared.jobs import RestoreRequest
from shared.modes import mode_for
from shared.state import JobState, JobStatus, StateStore, new_job_id
from tests.e2e.jobs import wait_job
from tests.e2e.test_image_transfer_mode import kill_pool_children, no_leftovers
from tests.faults.conftest import QUEUES
from tests.faults.test_worker_death import wait_until
from tests.integration.engine_client import lab_write
from workers.canvas import submit_restore

pytestmark = pytest.mark.integration
MiB = 1 << 20
VM = "web01"
RESTORED = "web01-restore-killed"


def uploading(connection: Any) -> bool:
    transfers = connection.system_service().image_transfers_service().list()
    return any(str(t.direction) == "upload" and str(t.phase) == "transferring" for t in transfers)


def disk_ids(connection: Any) -> set[str]:
    return {d.id for d in connection.system_service().disks_service().list()}


def test_a_restore_killed_mid_upload_is_redone_cleanly(
    lab: dict[str, Any], broker: str, store: StateStore, app: Celery, connection: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    from bench.fleet import queue_lab_backup
    from shared.engine.client import EngineClient
    from workers.resources import engine_settings

    repo = str(tmp_path / "repository")
    lab_write(lab, VM, 0, offset=8 * MiB, length=192 * MiB)
    with worker_process(broker, tmp_path / "worker.log", QUEUES, 2) as worker:
        with EngineClient.connect(engine_settings("lab", store)) as engine:
            vm = engine.find_vms(names=[VM])[0]
            backup_id = queue_lab_backup(app, store, engine, vm.id, [d.id for d in vm.disks], repo)
        assert wait_job(store, backup_id).status == JobStatus.SUCCEEDED
        disks_before = disk_ids(connection)
        job_id = new_job_id()
        store.create_job(JobState(id=job_id, vm_id="", mode="restore", manager="lab"))
        request = RestoreRequest(job_id, "lab", repo, backup_id, name=RESTORED)
        submit_restore(app, request, mode_for(request.mode).queue(""))
        wait_until(lambda: uploading(connection), "the upload to start", timeout_s=60)
        assert kill_pool_children(worker.pid)
        started = time.monotonic()
        job = wait_job(store, job_id, timeout_s=180)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert time.monotonic() - started < 120
    result = store.context(job_id)
    assert result and all(d["verified"] for d in result["disks"])
    vms = connection.system_service().vms_service().list(search=f"name={RESTORED}")
    assert len(vms) == 1
    attached = {
        a.disk.id
        for a in connection.system_service().vms_service().vm_service(vms[0].id)
        .disk_attachments_service().list()
    }  # fmt: skip
    assert disk_ids(connection) == disks_before | attached  # no floating disk
    assert no_leftovers(connection)
    connection.system_service().vms_service().vm_service(vms[0].id).remove()
