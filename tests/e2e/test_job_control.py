"""Job control end to end: `drover jobs cancel` of an image-transfer backup mid-copy (real
lab, real worker process, the API's own service), and a policy run refused because no live
worker consumes the mode's transfer queue (a broker of its own)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fleet import register_lab_manager
from lab.processes import worker_process
from lab.redis_server import redis_server
from orchestrator.service import Service, build_service
from shared.reaper import CANCELLED
from shared.repository.repository import Repository
from shared.settings import load_settings
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import backup, start_backup, wait_job
from tests.e2e.test_image_transfer_mode import no_leftovers
from tests.integration.engine_client import connect, find_vm, lab_write, vm_disks, wait_for
from workers.app import close_app

pytestmark = [pytest.mark.integration]
MiB = 1 << 20


@pytest.fixture
def connection(lab: dict[str, Any]) -> Any:
    with connect(lab) as conn:
        yield conn


def close_service(service: Service) -> None:
    revoke = service.revoke
    if isinstance(revoke, functools.partial):  # build_service's: bound to its Celery app
        close_app(revoke.args[0])


def copying(store: StateStore, job_id: str) -> bool:
    job = store.job(job_id)
    return job is not None and any(0 < d.done_chunks < d.planned_chunks for d in job.disks)


@pytest.mark.usefixtures("fleet")
def test_cancel_mid_copy_cleans_the_engine_and_frees_the_vm(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    redis_url: str,
    repo_dir: Path,
) -> None:
    vm = find_vm(connection, "name=web01")
    ids = [d.id for d in vm_disks(connection, vm)]
    lab_write(lab, vm.name, 0, offset=16 * MiB, length=192 * MiB)  # something to copy
    service = build_service(load_settings(redis_url=redis_url))
    try:
        job_id = start_backup(celery_app, store, manager, vm, ids, repo_dir, quiesce=False)
        wait_for(lambda: copying(store, job_id), "the transfer to be copying", timeout_s=120)
        view = service.cancel_job(job_id)
        assert view["status"] == "failed" and view["error"] == CANCELLED, view
        assert view["cancelled"] is True and view["cleanup"]["action"] == "cleaned", view
        assert view["revoked_tasks"], "the running transfer's task was not known"
        with pytest.raises(Exception, match="already finished"):
            service.cancel_job(job_id)
    finally:
        close_service(service)
    no_leftovers(connection)  # no snapshot, transfer, backup or disk attachment
    assert store.vm_lock_holder(vm.id) == ""
    # the job stays cancelled: a late step neither copies on nor commits
    done = [d.done_chunks for d in wait_job(store, job_id).disks]
    time.sleep(3)
    job = store.job(job_id)
    assert job is not None and job.status == JobStatus.FAILED and job.error == CANCELLED
    assert [d.done_chunks for d in job.disks] == done
    repo = Repository.open(str(repo_dir))
    assert job_id not in {b.backup_id for b in repo.list_backups()}
    # the VM is free and the fleet works: a new backup of it succeeds
    again = backup(celery_app, store, manager, vm, ids, repo_dir, quiesce=False)
    assert again.status in (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED_WITH_WARNINGS)
    no_leftovers(connection)


def test_a_run_without_a_transfer_image_worker_is_refused_naming_the_queue(
    lab: dict[str, Any], connection: Any, tmp_path: Path
) -> None:
    """Its own broker, where one worker consumes only the control queue: the API's service
    refuses the VM naming transfer.image and what to start, with nothing created anywhere,
    and /health says the queue is unserved."""
    with redis_server(tmp_path / "redis") as broker:
        service = build_service(load_settings(redis_url=broker, state_dir=tmp_path))
        try:
            register_lab_manager(service.state, lab)
            service.put_policy(
                {
                    "name": "imaged",
                    "manager": "lab",
                    "mode": "image_transfer",
                    "vms": {"names": ["web01"]},
                    "repository": str(tmp_path / "repo"),
                }
            )
            with worker_process(broker, tmp_path / "control.log", "drover.default", 1):
                health = service.health()
                run = service.run_policy("imaged")
        finally:
            close_service(service)
        assert "drover.default" in health["queues"] and "transfer.image" in health["unserved"]
        assert run["jobs"] == [] and [r["vm"] for r in run["refused"]] == ["web01"]
        assert run["refused"][0]["reason"] == (
            "no live worker consumes queue transfer.image: "
            "start one with `drover worker --queues transfer.image`"
        )
        assert service.jobs() == []
        vm = find_vm(connection, "name=web01")
        assert service.state.vm_lock_holder(vm.id) == ""
    no_leftovers(connection)
