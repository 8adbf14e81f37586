"""The API in-process against real Redis, the lab's engine and real Celery submission.

No worker runs: the jobs stay queued and their first messages stay on the broker, where
the test reads them. Everything lives in a Redis database of its own, flushed afterwards,
so no other test's worker ever sees these messages.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog
from pydantic import SecretStr

from orchestrator.api import create_app
from orchestrator.auth import TokenAuth
from orchestrator.service import build_service
from shared.settings import load_settings
from shared.state import JobState, JobStatus, StateStore
from workers.canvas import CONTROL_QUEUE, PREPARE

with warnings.catch_warnings():  # starlette would rather have httpx2, which is not installed
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
TOKEN = "integration-token-0123456789abcdef"
DB = 7


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    """Logs go nowhere: an earlier test may have left structlog writing to a closed stream."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


@pytest.fixture
def db_url(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> TestClient:
    settings = load_settings(redis_url=db_url, state_dir=tmp_path, api_tokens=[SecretStr(TOKEN)])
    service = build_service(settings)
    # These tests are about what the API queues and refuses; no worker runs the jobs (a run
    # with no consumer is refused: tests/e2e/test_job_control.py), so the queues are served.
    service.live_queues = lambda: {"drover.default", "transfer.image", "transfer.ssh"}
    app = create_app(service, TokenAuth(settings.api_tokens))
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def manager_body(lab: dict[str, Any], **changes: str) -> dict[str, str]:
    engine = lab["engine"]
    body = {
        "name": "lab",
        "url": engine["url"],
        "username": engine["username"],
        "password": engine["password"],
        "ca_file": engine["ca_file"],
    }
    return body | changes


def queued_messages(url: str, queue: str) -> list[dict[str, Any]]:
    """Celery messages waiting on a Redis queue (every priority level)."""
    client = redis.Redis.from_url(url)
    names = [k for k in client.keys(f"{queue}*") if client.type(k) == b"list"]
    messages = [json.loads(raw) for name in names for raw in client.lrange(name, 0, -1)]
    client.close()
    return messages


def test_register_a_manager_with_the_lab(api: TestClient, lab: dict[str, Any]) -> None:
    response = api.post("/managers", json=manager_body(lab))
    assert response.status_code == 201, response.text
    assert response.json()["password"] == "***"
    assert lab["engine"]["password"] not in api.get("/managers").text
    wrong = api.put("/managers/lab", json=manager_body(lab, password="not-the-password"))
    assert wrong.status_code == 400, wrong.text
    assert "connection test of manager 'lab' failed" in wrong.json()["detail"]
    assert api.get("/managers/lab").json()["username"] == lab["engine"]["username"]
    assert api.get("/managers", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_backups_of_an_empty_repository(api: TestClient) -> None:
    assert api.get("/backups").json() == []
    missing = api.post("/restores", json={"backup_id": "nope"})
    assert missing.status_code == 404 and "drover backups" in missing.json()["detail"]


def test_run_queues_one_job_per_vm_and_refuses_busy_vms(
    api: TestClient, lab: dict[str, Any], db_url: str
) -> None:
    assert api.post("/managers", json=manager_body(lab)).status_code == 201
    policy = {"name": "all", "manager": "lab", "vms": {"patterns": ["*"]}, "priority": 6}
    assert api.put("/policies/all", json=policy).status_code == 200

    run = api.post("/policies/all/run").json()
    assert run["refused"] == [] and len(run["jobs"]) == run["vms"] >= 2
    assert not any(job["vm"].startswith("drover-proxy") for job in run["jobs"])
    for job in run["jobs"]:
        shown = api.get(f"/jobs/{job['job_id']}").json()
        assert shown["status"] == "queued" and shown["vm_name"] == job["vm"]
        assert shown["policy"] == "all" and shown["mode"] == "image_transfer"
    messages = queued_messages(db_url, CONTROL_QUEUE)
    assert {m["headers"]["task"] for m in messages} == {PREPARE}
    calls = [m["headers"]["argsrepr"] for m in messages]
    assert len(calls) == len(run["jobs"])
    assert all(sum(j["job_id"] in call for call in calls) == 1 for j in run["jobs"])
    listed = [j["id"] for j in api.get("/jobs").json()]
    assert set(listed) == {j["job_id"] for j in run["jobs"]}

    again = api.post("/policies/all/run").json()
    assert again["jobs"] == [] and len(again["refused"]) == run["vms"]
    assert all("(queued)" in r["reason"] for r in again["refused"])
    assert len(queued_messages(db_url, CONTROL_QUEUE)) == len(run["jobs"])


def test_a_vm_locked_by_a_running_job_is_refused(
    api: TestClient, lab: dict[str, Any], db_url: str
) -> None:
    assert api.post("/managers", json=manager_body(lab)).status_code == 201
    policy = {"name": "one", "manager": "lab", "vms": {"patterns": ["*"]}}
    assert api.put("/policies/one", json=policy).status_code == 200
    first = api.post("/policies/one/run").json()["jobs"][0]
    store = StateStore.from_url(db_url)
    for job in api.get("/jobs").json():  # forget the queued jobs, keep one VM busy
        store.unlock_vm(job["vm_id"], job["id"])
    store.create_job(JobState(id="busy", vm_id=first["vm_id"], status=JobStatus.RUNNING))
    store.lock_vm(first["vm_id"], "busy")

    run = api.post("/policies/one/run").json()
    [refusal] = run["refused"]
    assert refusal["vm"] == first["vm"]
    assert "already being backed up by job busy (running)" in refusal["reason"]
    assert first["vm"] not in [j["vm"] for j in run["jobs"]] and run["jobs"]
    assert store.vm_lock_holder(first["vm_id"]) == "busy"


def test_host_credentials_against_the_lab_engine(api: TestClient, lab: dict[str, Any]) -> None:
    added = api.post("/managers", json=manager_body(lab))
    assert added.status_code == 201, added.text
    names = sorted(h["name"] for h in lab["hosts"])
    assert added.json()["hosts"] == names and added.json()["hosts_without_ssh"] == names
    assert [(h["name"], h["credentials"]) for h in api.get("/managers/lab/hosts").json()] == [
        (name, False) for name in names
    ]

    first = lab["hosts"][0]
    key = Path(first["ssh_key"]).read_text()
    access = {
        "address": first["address"],
        "port": first["ssh_port"],
        "user": first["ssh_user"],
        "host_key": first["ssh_host_key"],
        "private_key": key,
        "mount_root": first["mount_root"],
        "dev_root": first["dev_root"],
    }
    response = api.put(f"/managers/lab/hosts/{first['name']}", json=access)
    assert response.status_code == 200, response.text
    assert response.json()["auth"] == "private_key" and key.splitlines()[1] not in response.text
    listed = {h["name"]: h for h in api.get("/managers/lab/hosts").json()}
    assert listed[first["name"]]["credentials"] is True
    assert listed[first["name"]]["port"] == first["ssh_port"]
    synced = api.post("/managers/lab/sync").json()
    assert synced["hosts_without_ssh"] == [n for n in names if n != first["name"]]
    unknown = api.put("/managers/lab/hosts/no-such-host", json=access)
    assert unknown.status_code == 404 and ", ".join(names) in unknown.json()["detail"]
    assert api.delete(f"/managers/lab/hosts/{first['name']}").status_code == 204
