"""Policies asking for what this version cannot do are refused at apply and at run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import cli as cli_module
from orchestrator import commands, support
from orchestrator.cli import cli
from orchestrator.client import ApiClient
from orchestrator.service import POLICY
from shared.errors import ConfigError
from shared.settings import get_settings
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

REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    "disk_attachment": (
        {"mode": "disk_attachment", "backup": {"type": "full"}},
        "policy 'nightly': mode disk_attachment is not available in this version of Drover "
        "(available: image_transfer, ssh, auto)",
        "use mode image_transfer or ssh or auto",
    ),
    "s3": (
        {"repository": "s3://bucket/p"},
        "policy 'nightly': repository s3://bucket/p: S3 repositories are not supported yet",
        "use a filesystem path",
    ),
    "other scheme": (
        {"repository": "nfs://filer/backups"},
        "policy 'nightly': repository nfs://filer/backups: nfs:// repositories are not supported",
        "use a filesystem path",
    ),
}
EVERYTHING = {
    "mode": "disk_attachment",
    "backup": {"type": "full"},
    "repository": "s3://bucket/p",
    "schedule": {"cron": "@daily"},
    "retention": {"keep_last": 14},
}


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> None:
    """disk_attachment as a planned mode, as these refusals were written for: they test the
    mechanism, whichever modes this tree has landed."""
    monkeypatch.setattr(support, "AVAILABLE_MODES", ("image_transfer", "ssh"))
    monkeypatch.setattr(support, "PLANNED_MODES", ("disk_attachment",))


@pytest.fixture
def world() -> World:
    world = make_world()
    world.service.add_manager(manager_body())
    world.engine.vms = [vm("vm-a", "web1"), vm("vm-b", "db01")]
    return world


def stored_by_an_older_version(world: World, **changes: Any) -> None:
    """A policy document written before its features were refused."""
    world.state.put_document(POLICY, "nightly", policy_body(**changes))


@pytest.mark.usefixtures("planned")
@pytest.mark.parametrize(("changes", "message", "hint"), REFUSED.values(), ids=list(REFUSED))
def test_apply_refuses(world: World, changes: dict[str, Any], message: str, hint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        world.service.put_policy(policy_body(**changes))
    assert refused.value.message.startswith(message)
    assert refused.value.hint.startswith(hint)
    assert world.service.policies() == []


@pytest.mark.usefixtures("planned")
@pytest.mark.parametrize(("changes", "message", "hint"), REFUSED.values(), ids=list(REFUSED))
def test_run_refuses_a_stored_policy(
    world: World, changes: dict[str, Any], message: str, hint: str
) -> None:
    stored_by_an_older_version(world, **changes)
    with pytest.raises(ConfigError) as refused:
        world.service.run_policy("nightly")
    assert refused.value.message.startswith(message)
    assert world.engine.searches == []  # refused before the engine is asked
    assert world.submit.backups == [] and world.state.job_states == {}
    assert world.service.policy("nightly")["name"] == "nightly"  # it still loads


@pytest.mark.usefixtures("planned")
def test_every_problem_in_one_message(world: World) -> None:
    with pytest.raises(ConfigError) as refused:
        world.service.put_policy(policy_body(**EVERYTHING))
    problems = refused.value.message.removeprefix("policy 'nightly': ").split("; ")
    assert [p.split(" ")[0] for p in problems] == ["mode", "repository"]  # retention landed
    hints = refused.value.hint.split("; ")
    assert hints[0] == "use mode image_transfer or ssh or auto"
    assert hints[1].startswith("use a filesystem path")


@pytest.mark.parametrize("mode", ["image_transfer", "auto"])
@pytest.mark.parametrize("repository", ["", "/var/lib/drover/repo", "file:///srv/backups"])
def test_available_modes_and_filesystem_repositories_are_accepted(
    world: World, mode: str, repository: str
) -> None:
    body = policy_body(mode=mode, repository=repository, schedule=None, retention={})
    stored = world.service.put_policy(body)["policy"]
    assert (stored["mode"], stored["repository"]) == (mode, repository)
    run = world.service.run_policy("nightly")
    assert [job["vm"] for job in run["jobs"]] == ["web1", "db01"]
    assert {request.mode for request, _, _ in world.submit.backups} == {"image_transfer"}


@pytest.mark.parametrize("netcat", [False, True])
def test_mode_ssh_is_accepted_at_apply_and_run(world: World, netcat: bool) -> None:
    stored = world.service.put_policy(policy_body(mode="ssh", netcat=netcat))["policy"]
    assert (stored["mode"], stored["netcat"]) == ("ssh", netcat)
    run = world.service.run_policy("nightly")
    assert [job["vm"] for job in run["jobs"]] == ["web1", "db01"] and run["refused"] == []
    assert {(r.mode, r.netcat, r.snapshot_chain) for r, _, _ in world.submit.backups} == {
        ("ssh", netcat, False)
    }
    assert {queue for _, _, queue in world.submit.backups} == {"transfer.ssh"}
    job = world.state.job(run["jobs"][0]["job_id"])
    assert job is not None and job.mode_reason == "mode ssh set by the policy"
    assert world.engine.version_reads == 0  # mode ssh does not depend on the engine's version


def test_mode_ssh_warns_when_no_host_has_credentials(world: World) -> None:
    result = world.service.put_policy(policy_body(mode="ssh"))
    [warning] = result["warnings"]
    assert "none has SSH credentials" in warning and "drover host add lab HOST" in warning
    assert world.service.put_policy(policy_body())["warnings"] == []


def test_an_empty_retention_is_no_rule(world: World) -> None:
    retention = {"keep_last": None, "keep_daily": None}
    assert world.service.put_policy(policy_body(retention=retention))["policy"]["name"]
    assert world.service.run_policy("nightly")["refused"] == []


def test_a_mode_that_lands_is_no_longer_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "AVAILABLE_MODES", ("image_transfer", "ssh"))
    assert world.service.put_policy(policy_body(mode="ssh"))["policy"]["mode"] == "ssh"
    with pytest.raises(ConfigError, match=r"available: image_transfer, ssh, auto\)"):
        world.service.put_policy(policy_body(mode="disk_attachment", backup={"type": "full"}))


def test_disk_attachment_is_accepted_once_it_has_landed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "AVAILABLE_MODES", ("image_transfer", "ssh", "disk_attachment"))
    body = policy_body(mode="disk_attachment", backup={"type": "full"})
    assert world.service.put_policy(body)["policy"]["mode"] == "disk_attachment"


@pytest.mark.usefixtures("planned")
def test_the_api_answers_400_with_one_line(world: World) -> None:
    client: TestClient = api_client(world)
    for response in (
        client.put("/policies/nightly", json=policy_body(**EVERYTHING)),
        client.post("/policies", json=policy_body(**EVERYTHING)),
    ):
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith("policy 'nightly': mode disk_attachment is not available")
        assert "\n" not in detail and "Traceback" not in detail
    assert client.get("/policies").json() == []

    stored_by_an_older_version(world, mode="disk_attachment", backup={"type": "full"})
    assert [p["name"] for p in client.get("/policies").json()] == ["nightly"]
    run = client.post("/policies/nightly/run")
    assert run.status_code == 400 and "is not available" in run.json()["detail"]


@pytest.fixture
def cli_world(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    http = TestClient(make_api(world), raise_server_exceptions=False)
    monkeypatch.setattr(
        commands, "make_client", lambda: ApiClient("http://testserver", TOKEN, http=http)
    )
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_args, **_kw: None)
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


@pytest.mark.usefixtures("planned")
def test_policy_apply_prints_the_refusal(cli_world: World, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "name: nightly\nmanager: lab\nvms: {patterns: ['*']}\nmode: disk_attachment\n"
        "backup: {type: full}\nretention: {keep_last: 7}\n"
    )
    result = CliRunner().invoke(cli, ["policy", "apply", "-f", str(policy)])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("drover: error: policy 'nightly': mode disk_attachment is not")
    assert "retention" not in line and "Traceback" not in line  # retention has landed
    assert cli_world.service.policies() == []


@pytest.mark.parametrize("option", [["--instant"], ["--instant", "--live-migrate", "sd2"]])
def test_instant_restore_is_refused_before_anything_is_queued(
    cli_world: World, option: list[str]
) -> None:
    result = CliRunner().invoke(cli, ["restore", "b1", *option])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert "instant restore (and its live migration) is not available" in line
    assert cli_world.submit.restores == []
