"""Redis restarted mid-job (SIGTERM, then started again on the same AOF): the worker rides it
out (it used to exit with code 0 on kombu's "'NoneType' object has no attribute 'hostname'"),
the job finishes, the backup restores bit-exact, nothing is left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from bench.fleet import queue_lab_backup, register_lab_manager
from lab.guest_client import guest_write
from lab.processes import worker_process
from lab.redis_server import RedisServer, running_redis
from shared.engine.client import EngineClient
from shared.repository.repository import Repository
from shared.settings import load_settings
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import wait_job
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers
from tests.faults.conftest import QUEUES
from tests.faults.test_worker_death import copying, wait_until
from workers.app import close_app, create_app
from workers.resources import engine_settings

pytestmark = pytest.mark.integration
MiB = 1 << 20
VM = "file01"


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.mark.parametrize("down_s", [0.5, 5.0])
def test_a_job_rides_out_a_redis_restart(
    lab: dict[str, Any], restartable: RedisServer, connection: Any, tmp_path: Path, down_s: float
) -> None:
    store = StateStore.from_url(restartable.url)
    register_lab_manager(store, lab)
    app: Celery = create_app(load_settings(redis_url=restartable.url))
    repo = tmp_path / "repository"
    try:
        with EngineClient.connect(engine_settings("lab", store)) as engine:
            vm = engine.find_vms(names=[VM])[0]
            disk_ids = [d.id for d in vm.disks]
            guest_write(Path(lab["state_dir"]), VM, 0, 8 * MiB, 160 * MiB)
            with worker_process(restartable.url, tmp_path / "worker.log", QUEUES, 2) as worker:
                job_id = queue_lab_backup(
                    app, store, engine, vm.id, disk_ids, str(repo), quiesce=False
                )
                wait_until(lambda: copying(store, job_id), "the transfer to start")
                restartable.stop()
                time.sleep(down_s)
                restartable.start()
                job = wait_job(store, job_id, timeout_s=180)
                assert worker.running(), "the worker exited when Redis restarted"
    finally:
        close_app(app)
    assert job.status == JobStatus.SUCCEEDED, job.error
    backup = Repository.open(str(repo))
    for disk_id in disk_ids:
        assert backup.image_sha256(job_id, disk_id) == disk_sha256(
            lab, connection, disk_id, tmp_path
        )
    assert no_leftovers(connection)
