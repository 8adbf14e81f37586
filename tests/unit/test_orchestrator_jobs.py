"""Worker health and job control (orchestrator/service.py, api.py, commands.py), with fakes:
a job whose queues no live worker consumes is refused before anything exists, /health names
the live and unserved queues, `jobs cancel` stops and cleans a job, `--wait` says when no
worker picks a job up and prints each job's outcome and a summary."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from orchestrator.commands import not_picked_up, watch_jobs
from orchestrator.service import Conflict
from shared.reaper import CANCELLED, Reaped
from shared.settings import get_settings
from shared.state import JobState, JobStatus
from tests.unit.orchestrator_fakes import (
    TOKEN,
    TestClient,
    World,
    api_client,
    make_api,
    make_world,
    manager_body,
    policy_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
    vm,
)

ALL_CENTRAL = {"drover.default", "transfer.image", "transfer.ssh"}


@pytest.fixture
def world() -> World:
    world = make_world()
    world.service.add_manager(manager_body())
    world.service.put_policy(policy_body())
    world.engine.vms = [vm("vm-a", "web1"), vm("vm-b", "db01", cluster="cluster2")]
    return world


@pytest.fixture
def client(world: World) -> TestClient:
    return api_client(world)


# every queue a job needs has a live consumer ----------------------------------------------


def test_a_run_with_no_consumer_of_the_transfer_queue_is_refused_naming_it(world: World) -> None:
    world.service.live_queues = lambda: {"drover.default", "transfer.ssh"}
    run = world.service.run_policy("nightly")
    assert run["jobs"] == [] and [r["vm"] for r in run["refused"]] == ["web1", "db01"]
    assert run["refused"][0]["reason"] == (
        "no live worker consumes queue transfer.image: "
        "start one with `drover worker --queues transfer.image`"
    )
    # nothing exists for a job no worker can run: no job, no VM lock, nothing submitted
    assert world.state.job_states == {} and world.state.locks == {}
    assert world.submit.backups == []


def test_a_run_with_no_control_worker_names_both_queues(world: World) -> None:
    world.service.live_queues = lambda: set()
    run = world.service.run_policy("nightly")
    assert run["refused"][0]["reason"] == (
        "no live worker consumes queues drover.default, transfer.image: "
        "start one with `drover worker --queues drover.default,transfer.image`"
    )
    assert world.state.job_states == {}


def test_a_queued_job_records_the_queues_it_needs(world: World, client: TestClient) -> None:
    job_id = world.service.run_policy("nightly")["jobs"][0]["job_id"]
    assert client.get(f"/jobs/{job_id}").json()["queues"] == ["drover.default", "transfer.image"]


def test_health_reports_the_live_and_the_unserved_queues(world: World, client: TestClient) -> None:
    world.state.workers = ["celery@a", "celery@b"]
    world.service.live_queues = lambda: {"drover.default", "transfer.image", "proxy.cluster1"}
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["redis"] == "ok" and health["workers"] == 2
    assert health["queues"] == ["drover.default", "proxy.cluster1", "transfer.image"]
    assert health["unserved"] == ["transfer.ssh"]
    assert "`drover worker --queues transfer.ssh`" in health["problems"][0]
    world.service.live_queues = lambda: {"transfer.image"}
    degraded = client.get("/health").json()
    assert degraded["status"] == "degraded" and degraded["unserved"][0] == "drover.default"


def test_health_of_a_broker_that_does_not_answer(world: World, client: TestClient) -> None:
    def silent() -> set[str]:
        raise ConnectionError("Error 111")

    world.service.live_queues = silent
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded" and "Error 111" in response.json()["workers"]


# cancel ---------------------------------------------------------------------------------


class Cleaner:
    def __init__(self, fail: bool = False) -> None:
        self.cleaned: list[tuple[str, str]] = []
        self.fail = fail
        self.events: list[str] = []

    def __call__(self, job: JobState, why: str) -> Reaped:
        self.cleaned.append((job.id, why))
        if self.fail:
            return Reaped(job.id, job.vm_name, "failed", f"{why}; cleaning failed: down", {})
        return Reaped(job.id, job.vm_name, "cleaned", why, {"snapshot": "snap-1"})


@pytest.fixture
def control(world: World) -> tuple[list[list[str]], Cleaner]:
    revoked: list[list[str]] = []
    cleaner = Cleaner()
    world.service.revoke = revoked.append
    world.service.clean_job = cleaner
    return revoked, cleaner


def test_cancel_revokes_cleans_fails_and_unlocks(
    world: World, client: TestClient, control: tuple[list[list[str]], Cleaner]
) -> None:
    revoked, cleaner = control
    job_id = world.service.run_policy("nightly")["jobs"][0]["job_id"]
    world.state.job_states[job_id].status = JobStatus.RUNNING
    world.state.record_task(job_id, "task-prepare", "task-transfer")
    fence = world.state.fences["vm-a"]
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "failed" and view["error"] == CANCELLED == "cancelled by the operator"
    assert view["cancelled"] is True and view["cleanup"]["action"] == "cleaned"
    assert revoked == [["task-prepare", "task-transfer"]]
    assert cleaner.cleaned == [(job_id, CANCELLED)]
    assert "vm-a" not in world.state.locks  # released for the next backup
    assert world.state.fences["vm-a"] > fence  # re-fenced first: a late step stops
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"job {job_id} has already finished (failed): there is nothing to cancel "
        f"(see it with `drover jobs {job_id}`)"
    )
    world.service.run_policy("nightly")  # the VM can be backed up again


def test_a_finished_job_is_not_cancelled(
    world: World, control: tuple[list[list[str]], Cleaner]
) -> None:
    revoked, cleaner = control
    job_id = world.service.run_policy("nightly")["jobs"][0]["job_id"]
    world.state.set_status(job_id, JobStatus.SUCCEEDED)
    with pytest.raises(Conflict, match=r"already finished \(succeeded\)"):
        world.service.cancel_job(job_id)
    assert revoked == [] and cleaner.cleaned == []
    assert world.state.job_states[job_id].status == JobStatus.SUCCEEDED


def test_a_failed_cleanup_is_a_warning_and_the_job_still_ends(
    world: World, control: tuple[list[list[str]], Cleaner]
) -> None:
    _, cleaner = control
    cleaner.fail = True
    job_id = world.service.run_policy("nightly")["jobs"][0]["job_id"]

    def broken(task_ids: list[str]) -> None:
        raise ConnectionError("broker down")

    world.service.revoke = broken
    world.state.record_task(job_id, "t1")
    view = world.service.cancel_job(job_id)
    assert view["status"] == "failed" and view["error"] == CANCELLED
    assert any("could not be revoked: broker down" in w for w in view["warnings"])
    assert any(w.startswith("cleanup incomplete:") for w in view["warnings"])
    assert "vm-a" not in world.state.locks


def test_cancelling_a_restore_revokes_its_task_by_the_job_id(
    world: World, control: tuple[list[list[str]], Cleaner]
) -> None:
    revoked, cleaner = control
    world.repository.summaries = [
        {"backup_id": "b1", "vm_id": "vm-a", "vm_name": "web1", "mode": "image_transfer",
         "disks": []}
    ]  # fmt: skip
    job_id = world.service.restore({"backup_id": "b1"})["job_id"]
    world.service.cancel_job(job_id)
    assert revoked == [[job_id]] and cleaner.cleaned == [(job_id, CANCELLED)]


def test_cancel_of_an_unknown_job_is_404(client: TestClient) -> None:
    assert client.post(f"/jobs/{'0' * 32}/cancel").status_code == 404
    assert client.post("/jobs/nope/cancel").status_code == 404


# the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli_world(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    http = TestClient(make_api(world), raise_server_exceptions=False)
    monkeypatch.setattr(
        commands, "make_client", lambda: ApiClient("http://testserver", TOKEN, http=http)
    )
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_args, **_kw: None)
    get_settings.cache_clear()
    return world


def drover(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_jobs_cancel_and_show(cli_world: World, control: tuple[list[list[str]], Cleaner]) -> None:
    job_id = cli_world.service.run_policy("nightly")["jobs"][0]["job_id"]
    shown = drover("jobs", job_id)
    assert shown.exit_code == 0 and "queued" in shown.stdout
    assert json.loads(drover("jobs", "--json", job_id).stdout)["id"] == job_id
    assert len(json.loads(drover("jobs", "--limit", "5", "--json").stdout)) == 2
    cancelled = drover("jobs", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert f"job {job_id} cancelled: failed: cancelled by the operator" in cancelled.stdout
    assert "engine: cleaned snapshot snap-1" in cancelled.stdout
    refused = drover("jobs", "cancel", job_id)
    assert refused.exit_code == 1
    assert "already finished (failed): there is nothing to cancel" in refused.output


class ScriptedClient:
    """Job views in turn per poll; a clock advanced by each sleep."""

    def __init__(self, polls: list[list[dict[str, Any]]]) -> None:
        self.polls = polls
        self.now = 0.0
        self.calls = 0

    def get(self, path: str) -> dict[str, Any]:
        job_id = path.rsplit("/", 1)[1]
        poll = self.polls[min(self.calls // len(self.polls[0]), len(self.polls) - 1)]
        self.calls += 1
        return next(j for j in poll if j["id"] == job_id)

    def sleep(self, seconds: float) -> None:
        self.now += 5


def job(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job_id, "vm_name": "web1", "kind": "full", "mode": "image_transfer",
        "status": status, "finished": status in ("succeeded", "succeeded_with_warnings", "failed"),
        "bytes_read": 0, "size": 0, "rate_bps": 0, "warnings": [], "error": "",
        "queues": ["drover.default", "transfer.image"],
    }  # fmt: skip
    return view | fields


def test_wait_names_a_job_no_worker_picked_up_and_prints_outcomes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = "a" * 32, "b" * 32
    queued = [job(a, "queued"), job(b, "queued", vm_name="db01")]
    done = [
        job(a, "succeeded_with_warnings", warnings=["disk scratch was added"]),
        job(b, "failed", vm_name="db01", error="transfer: disk read failed"),
    ]
    client = ScriptedClient([queued, queued, queued, done])
    jobs = watch_jobs(
        client,  # type: ignore[arg-type]
        [a, b],
        sleep=client.sleep,
        clock=lambda: client.now,
    )
    assert [j["status"] for j in jobs] == ["succeeded_with_warnings", "failed"]
    out, err = capsys.readouterr()
    assert err.count("is still queued after 10 s: no worker has picked it up") == 2
    assert "on queues drover.default, transfer.image" in err
    assert "`drover worker --queues drover.default,transfer.image`" in err
    lines = out.splitlines()
    assert "  warning: disk scratch was added" in lines
    assert "  error: transfer: disk read failed" in lines
    assert lines[-1] == "1 succeeded, 1 failed (1 with warnings)"


def test_a_proxy_job_not_picked_up_says_to_start_a_proxy_worker() -> None:
    text = not_picked_up(job("c" * 32, "queued", queues=["drover.default", "proxy.c1"]), 12)
    assert "`drover worker --queues drover.default`" in text
    assert "`drover worker --proxy` in a proxy VM of cluster c1" in text


def test_a_waited_restore_shows_bytes_written_and_verified(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = {
        "vm_name": "web1-restored", "vm_id": "vm-new", "bytes_written": 3 << 20,
        "disks": [{"disk_id": "d0", "name": "os", "sha256": "ab" * 32, "verified": True,
                   "bytes_written": 3 << 20}],
    }  # fmt: skip
    client = ScriptedClient([[job("r" * 32, "succeeded", mode="restore", result=result)]])
    watch_jobs(client, ["r" * 32], sleep=client.sleep, clock=lambda: client.now)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "restored VM web1-restored (vm-new): 1 disk(s), 3.0 MiB written, verified" in out
    assert "disk os: 3.0 MiB written, verified (sha256 abababababababab...)" in out
    assert out.splitlines()[-1] == "1 succeeded, 0 failed"
