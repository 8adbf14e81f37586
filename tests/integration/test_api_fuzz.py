"""Schemathesis against the API's own OpenAPI: no generated request may cause a server error.

The API runs in-process over a private Redis database (ids shaped like other keys would
reach real Redis types) and a real, empty repository; the engine and the Celery submission
are the unit tests' fakes. Every case carries a valid token, so the cases reach the
handlers; each operation gets a bounded number of examples, coverage and fuzzing cases.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from orchestrator.api import create_app
from orchestrator.auth import TokenAuth
from orchestrator.service import Service
from shared.repository.repository import Repository
from shared.settings import Settings
from shared.state import DiskProgress, JobState, StateStore
from tests.unit.orchestrator_fakes import FakeEngine, FakeSubmit, make_api, make_world, vm

pytestmark = [pytest.mark.integration]
TOKEN = "fuzz-token-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DB = 9  # test_api.py uses 7
JOB_ID = "0123456789abcdef0123456789abcdef"
EXAMPLES = 40  # per operation and phase: the whole module stays well under a minute
# Hypothesis keeps caches even without an example database, from collection on: not in the tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "drover-test-hypothesis")


@pytest.fixture(scope="module")
def fuzz_app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    state = StateStore(client)
    _seed(state)
    repository = tmp_path_factory.mktemp("fuzz") / "repository"
    Repository.open(str(repository))  # an empty repository as the default
    engine, submit = FakeEngine(vms=[vm("vm-a", "web1")]), FakeSubmit()
    service = Service(
        state=state,
        settings=Settings(repository=str(repository), api_tokens=[SecretStr(TOKEN)]),
        connect=engine.connect,
        submit_backup=submit.backup,
        submit_restore=submit.restore,
        open_repository=functools.partial(Repository.open, create=False),
        live_queues=lambda: {"drover.default", "transfer.image"},
    )
    yield create_app(service, TokenAuth([SecretStr(TOKEN)]))
    client.flushdb()
    client.close()


def _seed(state: StateStore) -> None:
    """A job with per-disk keys next to it (`drover:job:ID:disks`, `...:chunks:DISK`)."""
    state.create_job(JobState(id=JOB_ID, vm_id="vm-a", vm_name="web1", manager="lab"))
    state.plan_disk(JOB_ID, DiskProgress(disk_id="disk-1", name="os", size=1 << 20))
    state.record_chunk(JOB_ID, "disk-1", 0, "ab" * 32, 1 << 20)


# The OpenAPI does not depend on the service behind it, so it is read from an app over the
# unit tests' fakes at import (schemathesis 4.32's `from_fixture` fails under pytest 9);
# every case is then sent to the fixture's app.
schema = schemathesis.openapi.from_dict(make_api(make_world()).openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written under .hypothesis/
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case[Any], fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, headers=AUTH, checks=[not_a_server_error])


@pytest.mark.parametrize(
    "path",
    [f"/jobs/{JOB_ID}:disks", f"/jobs/{JOB_ID}:chunks:disk-1", f"/jobs/{JOB_ID}:disk:disk-1"],
)
def test_ids_shaped_like_other_keys(fuzz_app: FastAPI, path: str) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(fuzz_app, raise_server_exceptions=False, headers=AUTH)
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert "32 lowercase hexadecimal digits" in response.json()["detail"]
    assert client.get(f"/jobs/{JOB_ID}").json()["disks"][0]["disk_id"] == "disk-1"


def test_long_repository_values_against_the_filesystem(fuzz_app: FastAPI, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(fuzz_app, raise_server_exceptions=False, headers=AUTH)
    long_name = str(tmp_path / ("a" * 300))
    for response in (
        client.get("/backups", params={"repository": long_name}),
        client.get("/backups/b1", params={"repository": long_name}),
        client.post("/restores", json={"backup_id": "b1", "repository": long_name}),
    ):
        assert response.status_code == 400, response.text
    not_a_repository = client.get("/backups", params={"repository": str(tmp_path)})
    assert not_a_repository.status_code == 400
    assert "there is no Drover repository" in not_a_repository.json()["detail"]
