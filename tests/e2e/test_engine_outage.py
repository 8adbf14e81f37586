"""Engine outages during a backup job (real Redis, lab, worker processes): the job rides
them out, restores bit-exact, and leaves nothing on the engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shared.repository.repository import Repository
from shared.state import JobStatus, StateStore
from tests.e2e.jobs import start_backup, wait_job
from tests.e2e.test_image_transfer_mode import disk_sha256, no_leftovers, restore_and_verify
from tests.integration.engine_client import (
    connect,
    find_vm,
    vm_disks,
    wait_for,
)
from tests.integration.test_lab_outage import FINALIZE, end_outage, outage_state, start_outage

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fleet")]
OUTAGE_S = 20.0


@pytest.fixture
def connection(lab: dict[str, Any]) -> Any:
    with connect(lab) as conn:
        yield conn


@pytest.fixture(autouse=True)
def no_outage_after(lab: dict[str, Any], connection: Any) -> Any:
    yield
    end_outage(lab)  # before the connection logs out


def test_a_backup_rides_out_20s_of_503s_and_restores_bit_exact(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=file01")
    ids = [d.id for d in vm_disks(connection, vm)]
    expected = guest_disks_sha256(lab, connection, vm, tmp_path)
    job_id = start_backup(celery_app, store, manager, vm, ids, repo_dir, quiesce=False)
    wait_for(lambda: running(store, job_id), "the job running", timeout_s=30)
    start_outage(lab, status=503, seconds=OUTAGE_S)
    started = time.monotonic()

    job = wait_job(store, job_id, timeout_s=OUTAGE_S + 60)
    assert job.status == JobStatus.SUCCEEDED, (job.error, job.warnings)
    assert outage_state(lab)["hits"] > 0  # the workers did call the engine during it
    assert time.monotonic() - started >= OUTAGE_S - 1
    assert_backed_up(repo_dir, job.id, expected)
    restore_and_verify(
        connection, celery_app, store, manager, repo_dir, job.id, "file01-restored", expected
    )


def test_one_500_while_finalizing_a_transfer_does_not_fail_the_job(
    lab: dict[str, Any],
    connection: Any,
    celery_app: Any,
    store: StateStore,
    manager: str,
    repo_dir: Path,
    tmp_path: Path,
) -> None:
    vm = find_vm(connection, "name=app01")
    ids = [d.id for d in vm_disks(connection, vm)]
    expected = guest_disks_sha256(lab, connection, vm, tmp_path)
    start_outage(lab, status=500, count=1, paths=FINALIZE)

    job = wait_job(
        store, start_backup(celery_app, store, manager, vm, ids, repo_dir, quiesce=False)
    )
    assert job.status == JobStatus.SUCCEEDED, (job.error, job.warnings)
    assert outage_state(lab)["hits"] == 1
    no_leftovers(connection)
    assert_backed_up(repo_dir, job.id, expected)
    restore_and_verify(
        connection, celery_app, store, manager, repo_dir, job.id, "app01-restored", expected
    )


def running(store: StateStore, job_id: str) -> bool:
    job = store.job(job_id)
    return job is not None and job.status != JobStatus.QUEUED


def guest_disks_sha256(
    lab: dict[str, Any], connection: Any, vm: Any, tmp_path: Path
) -> dict[str, str]:
    """What the (running) VM's disks hold, read without Drover."""
    return {d.id: disk_sha256(lab, connection, d.id, tmp_path) for d in vm_disks(connection, vm)}


def assert_backed_up(repo_dir: Path, backup_id: str, expected: dict[str, str]) -> None:
    repo = Repository.open(str(repo_dir))
    assert {d: repo.image_sha256(backup_id, d) for d in expected} == expected
