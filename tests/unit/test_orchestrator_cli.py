from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from shared.sealed import opened_fields
from shared.settings import get_settings
from shared.state import DiskProgress, JobStatus
from tests.unit.orchestrator_fakes import (
    PASSWORD,
    SECRET_KEY,
    TOKEN,
    TestClient,
    World,
    make_api,
    make_world,
    manager_body,
    quiet_logs,  # noqa: F401  (an autouse fixture)
    vm,
)

POLICY_YAML = """
name: nightly
manager: lab
vms: {patterns: ["*"]}
mode: image_transfer
exclude_disks: [scratch]
"""


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    world = make_world()
    world.engine.vms = [vm("vm-a", "web1"), vm("vm-b", "db01")]
    http = TestClient(make_api(world), raise_server_exceptions=False)
    monkeypatch.setattr(
        commands, "make_client", lambda: ApiClient("http://testserver", TOKEN, http=http)
    )
    return world


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # structlog would keep CliRunner's stderr, closed after the test, for later tests' logs
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_args, **_kw: None)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def drover(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_manager_add_reads_the_password_from_the_environment(world: World) -> None:
    result = drover(
        "manager", "add", "lab", "--url", manager_body()["url"], "--username", "admin@internal",
        "--password-env", "ENGINE_PW", "--json", env={"ENGINE_PW": PASSWORD},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["password"] == "***"
    assert PASSWORD not in result.output
    stored = world.state.document("manager", "lab")
    assert stored is not None and opened_fields(stored, SECRET_KEY)["password"] == PASSWORD


def test_manager_add_from_a_file_and_one_source_only(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    base = ["manager", "add", "lab", "--url", manager_body()["url"], "--username", "a@internal"]
    assert drover(*base, "--password-file", str(secret)).exit_code == 0
    both = drover(*base, "--password-file", str(secret), "--password", "x")
    assert both.exit_code == 1 and "give the password one way" in both.output
    missing = drover(*base, "--password-file", str(tmp_path / "none"), "--replace")
    assert missing.exit_code == 1 and "cannot read the password file" in missing.output


def test_apply_run_and_jobs(world: World, tmp_path: Path) -> None:
    world.service.add_manager(manager_body())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    applied = drover("policy", "apply", "-f", str(policy), "--json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["applied"] == ["nightly"]
    run = drover("policy", "run", "nightly", "--json")
    assert run.exit_code == 0, run.output
    document = json.loads(run.stdout)
    assert [j["vm"] for j in document["jobs"]] == ["web1", "db01"]
    jobs = json.loads(drover("jobs", "--json").stdout)
    assert {j["status"] for j in jobs} == {"queued"}
    one = drover("jobs", document["jobs"][0]["job_id"])
    assert one.exit_code == 0 and "web1" in one.stdout and "queued" in one.stdout
    listed = drover("policy", "list")
    assert "nightly" in listed.stdout


def test_one_job_shows_the_worker_of_each_disk(world: World, tmp_path: Path) -> None:
    world.service.add_manager(manager_body())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    assert drover("policy", "apply", "-f", str(policy)).exit_code == 0
    job_id = json.loads(drover("policy", "run", "nightly", "--json").stdout)["jobs"][0]["job_id"]
    world.state.job_states[job_id].disks = [
        DiskProgress("d0", "web1_os", 1 << 20, 4, worker="proxy-drover-proxy-cluster1@node1"),
        DiskProgress("d1", "data", 1 << 20, 4),  # its transfer has not started
    ]
    shown = drover("jobs", job_id)
    assert shown.exit_code == 0, shown.output
    disks = [line for line in shown.stdout.splitlines() if line.startswith("  disk ")]
    assert disks[0].startswith("  disk web1_os") and disks[0].endswith(
        "  worker proxy-drover-proxy-cluster1@node1"
    )
    assert disks[1].startswith("  disk data") and "worker" not in disks[1]
    as_json = json.loads(drover("jobs", job_id, "--json").stdout)
    assert [d["worker"] for d in as_json["disks"]] == ["proxy-drover-proxy-cluster1@node1", ""]


def test_run_wait_exits_non_zero_when_a_job_fails(world: World) -> None:
    world.service.add_manager(manager_body())
    world.service.put_policy({"name": "nightly", "manager": "lab", "vms": {"patterns": ["*"]}})

    def finish(request, queue) -> None:  # type: ignore[no-untyped-def]
        status = JobStatus.FAILED if request.vm_name == "db01" else JobStatus.SUCCEEDED
        world.state.set_status(
            request.job_id, status, "disk read failed" if status == JobStatus.FAILED else ""
        )

    world.service.submit_backup = finish
    result = drover("policy", "run", "nightly", "--wait", "--json")
    assert result.exit_code == 1
    statuses = {j["vm_name"]: j["status"] for j in json.loads(result.stdout)["jobs"]}
    assert statuses == {"web1": "succeeded", "db01": "failed"}
    plain = drover("policy", "run", "nightly", "--wait")
    assert plain.exit_code == 1 and "failed" in plain.stdout


def test_bad_policy_file_is_one_line(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML + "priorty: 3\n")
    result = drover("policy", "apply", "-f", str(policy))
    assert result.exit_code == 1
    assert result.output.startswith("drover: error: ") and "unknown key 'priorty'" in result.output
    assert "Traceback" not in result.output


def test_api_errors_are_one_line(world: World) -> None:
    result = drover("policy", "run", "missing")
    assert result.exit_code == 1
    assert "drover: error: policy 'missing' does not exist" in result.output


def test_unreachable_api_says_how_to_start_it(monkeypatch: pytest.MonkeyPatch) -> None:
    result = drover("jobs", env={"DROVER_API_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 1
    assert "cannot reach the Drover API at http://127.0.0.1:9: start it with `drover api`" in (
        result.output
    )


def test_wrong_token_says_which_variable(monkeypatch: pytest.MonkeyPatch, world: World) -> None:
    http = TestClient(make_api(world), raise_server_exceptions=False)
    monkeypatch.setattr(commands, "make_client", lambda: ApiClient("http://t", "wrong", http=http))
    result = drover("jobs")
    assert result.exit_code == 1 and "DROVER_API_TOKEN" in result.output


def test_api_refuses_to_start_without_a_token() -> None:
    result = drover("api", env={"DROVER_API_TOKENS": "[]"})
    assert result.exit_code == 1 and "no API token is configured" in result.output
    result = drover("api", "--insecure-local", "--host", "0.0.0.0")
    assert result.exit_code == 1 and "127.0.0.1 only" in result.output


def test_flower_refuses_to_start_without_auth() -> None:
    result = drover("flower", env={"DROVER_FLOWER_USER": "", "DROVER_FLOWER_PASSWORD": ""})
    assert result.exit_code == 1 and "DROVER_FLOWER_PASSWORD" in result.output


def test_backups_and_restore(world: World) -> None:
    world.service.add_manager(manager_body())
    world.repository.summaries = [
        {
            "backup_id": "b1", "vm_id": "vm-a", "vm_name": "web1", "kind": "full",
            "created_at": "2024-01-01T02:00:00Z",
            "disks": [{"disk_id": "d0", "name": "os", "size": 1 << 30}],
        }
    ]  # fmt: skip
    listed = drover("backups")
    assert listed.exit_code == 0 and "b1" in listed.stdout and "web1" in listed.stdout
    restored = drover("restore", "b1", "--name", "copy", "--json")
    assert restored.exit_code == 0, restored.output
    assert world.submit.restores[0].name == "copy"
    assert json.loads(restored.stdout)["job_id"] == world.submit.restores[0].job_id
