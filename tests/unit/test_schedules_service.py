"""Scheduled policies through the Service, the API and the CLI: accepted, kept in step with
the scheduler's entries, listed with their next run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator import cli as cli_module
from orchestrator import commands
from orchestrator.cli import cli
from orchestrator.client import ApiClient
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

BERLIN = {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}


@pytest.fixture
def world() -> World:
    world = make_world()
    world.service.add_manager(manager_body())
    world.engine.vms = [vm("vm-a", "web1")]
    return world


@pytest.fixture
def synced(world: World) -> list[tuple[str, dict[str, Any] | None]]:
    calls: list[tuple[str, dict[str, Any] | None]] = []
    world.service.sync_schedule = lambda name, schedule: calls.append((name, schedule))
    return calls


def test_a_scheduled_policy_is_accepted_and_runs(world: World, synced: list[Any]) -> None:
    stored = world.service.put_policy(policy_body(schedule=BERLIN))["policy"]
    assert stored["schedule"] == BERLIN
    assert synced == [("nightly", BERLIN)]
    run = world.service.run_policy("nightly")  # the refusal of `schedule` is lifted
    assert [job["vm"] for job in run["jobs"]] == ["web1"] and run["refused"] == []


def test_the_entry_follows_the_policy(world: World, synced: list[Any]) -> None:
    world.service.put_policy(policy_body(schedule={"cron": "@daily"}))
    world.service.put_policy(policy_body())  # schedule dropped
    world.service.remove_policy("nightly")
    assert synced == [
        ("nightly", {"cron": "@daily", "timezone": "UTC"}),
        ("nightly", None),
        ("nightly", None),
    ]


def test_the_policy_list_shows_the_next_run(world: World) -> None:
    world.service.put_policy(policy_body(schedule=BERLIN))
    world.service.put_policy(policy_body(name="adhoc"))
    listed = {p["name"]: p for p in api_client(world).get("/policies").json()}
    assert listed["adhoc"]["next_run"] is None
    upcoming = listed["nightly"]["next_run"]
    assert upcoming["timezone"] == "Europe/Berlin"
    assert upcoming["at"].endswith(("T02:30:00+01:00", "T02:30:00+02:00", "T03:00:00+02:00"))
    assert upcoming["utc"].endswith("Z")


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


def test_drover_policy_list_prints_both_clocks(cli_world: World) -> None:
    cli_world.service.put_policy(policy_body(schedule=BERLIN))
    cli_world.service.put_policy(policy_body(name="adhoc"))
    result = CliRunner().invoke(cli, ["policy", "list"])
    assert result.exit_code == 0, result.output
    adhoc, nightly = result.output.splitlines()
    assert adhoc.split()[-1] == "-"
    assert "30 2 * * * (Europe/Berlin)  next: " in nightly
    assert (" CET = " in nightly or " CEST = " in nightly) and nightly.endswith(" UTC")


@pytest.mark.parametrize("name", ["beat", "scheduler"])
def test_drover_beat_and_its_alias(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "--max-interval" in result.output and "--grace" in result.output
