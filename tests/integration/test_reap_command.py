"""`drover reap` against a real Redis: says what it would clean, and what it could not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.redis_server import redis_server
from orchestrator.cli import cli
from shared.settings import get_settings
from shared.state import JobState, JobStatus, StateStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    with redis_server(tmp_path / "redis") as url:
        monkeypatch.setenv("DROVER_REDIS_URL", url)
        get_settings.cache_clear()
        yield StateStore.from_url(url)
    get_settings.cache_clear()


def dead_job(store: StateStore) -> str:
    job = JobState(id="a" * 32, vm_id="vm-1", vm_name="db01", manager="gone", mode="image_transfer")
    store.create_job(job)
    store.set_status(job.id, JobStatus.RUNNING)
    store.record_engine_object(job.id, "backup", "b-1")  # and its VM lock expired long ago
    return job.id


def test_reap_dry_run_and_a_manager_that_is_gone(store: StateStore) -> None:
    job_id = dead_job(store)
    dry = CliRunner().invoke(cli, ["reap", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    [entry] = json.loads(dry.stdout)["jobs"]
    assert entry["job_id"] == job_id and entry["action"] == "would clean"
    assert entry["objects"] == {"backup": "b-1"}
    assert store.job(job_id).status == JobStatus.RUNNING  # type: ignore[union-attr]

    real = CliRunner().invoke(cli, ["reap"])
    assert real.exit_code == 0, real.output
    assert "failed: job running but its VM lock expired" in real.stdout
    assert "manager 'gone' is not registered" in real.stdout
    job = store.job(job_id)
    assert job is not None and job.status == JobStatus.FAILED and job.error.startswith("reaped")
