"""`drover beat` for real: Redis, two scheduler replicas, a worker, the lab's engine.

A policy scheduled every minute (`* * * * *`, in a zone of its own) selects no VM, so each run
only records itself (`shared.schedules.runs`). The beats tick every second (`--max-interval 1`,
so a dead leader's lock expires after 5 s). To have a first slot without waiting for it, the
policy's entry is set back five minutes before the beats start: the leader then catches up the
latest missed slot once (the others are older than `--grace`, and skipped). The leader is then
SIGKILLed and started again, and the next minute's slot must run once, from whichever replica
leads by then; no slot is ever sent twice (the beats' logs) nor run twice (the run records).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from lab import procs
from lab.processes import drover_process, worker_process
from lab.redis_server import redis_server
from orchestrator.service import build_service
from shared.schedules.cron import parse_slot_id
from shared.schedules.runs import runs
from shared.settings import load_settings
from shared.state import StateStore
from workers.app import close_app, create_app
from workers.beat import LOCK_KEY, PolicyEntry, configure, entry_name

pytestmark = pytest.mark.integration
POLICY = "every-minute"
GRACE_S = 120
BEAT_START_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


@pytest.fixture
def world(tmp_path: Path, lab: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with redis_server(tmp_path / "redis") as url:
        settings = load_settings(redis_url=url, state_dir=tmp_path / "state")
        service = build_service(settings)
        engine = lab["engine"]
        service.add_manager(
            {"name": "lab", "url": engine["url"], "username": engine["username"],
             "password": engine["password"], "ca_file": engine["ca_file"]}
        )  # fmt: skip
        env = {
            "DROVER_REDIS_URL": url,
            "DROVER_STATE_DIR": str(tmp_path / "state"),  # the same key seals the manager
            "DROVER_LOG__FORMAT": "json",
        }
        yield {"url": url, "settings": settings, "service": service, "env": env, "dir": tmp_path}


@contextmanager
def beat(world: dict[str, Any], name: str) -> Iterator[procs.ManagedProcess]:
    log = world["dir"] / f"{name}.log"
    args = ["beat", "--max-interval", "1", "--grace", str(GRACE_S)]
    started = lambda: "policy schedules reconciled" in _text(log)  # noqa: E731
    with drover_process(args, log, started, BEAT_START_TIMEOUT_S, world["env"]) as process:
        yield process


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def sent_slots(log: Path) -> list[str]:
    """The slots a beat sent (its "slot due" lines)."""
    found = []
    for line in _text(log).splitlines():
        if line.startswith("{") and '"slot due"' in line:
            found.append(json.loads(line)["slot"])
    return found


def ran(store: StateStore) -> list[dict[str, Any]]:
    return [r for r in reversed(runs(store, POLICY)) if r["outcome"] == "ran"]


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(360)
def test_two_replicas_fire_each_slot_once_across_a_leader_restart(world: dict[str, Any]) -> None:
    store = StateStore.from_url(world["url"])
    service = world["service"]
    put = service.put_policy(
        {"name": POLICY, "manager": "lab", "vms": {"names": ["no-such-vm"]},
         "schedule": {"cron": "* * * * *", "timezone": "America/New_York"}}
    )  # fmt: skip
    assert put["policy"]["schedule"]["timezone"] == "America/New_York"
    listed = {p["name"]: p for p in service.policies()}
    assert listed[POLICY]["next_run"]["at"].endswith(("-05:00", "-04:00"))

    app = configure(service_app(world), world["settings"])
    entry = PolicyEntry.from_key(PolicyEntry.generate_key(app, entry_name(POLICY)), app=app)
    entry.reschedule(datetime.now(UTC) - timedelta(minutes=5))  # five slots missed
    client = redis.Redis.from_url(world["url"], decode_responses=True)
    dir_: Path = world["dir"]

    with ExitStack() as stack:
        stack.enter_context(worker_process(world["url"], dir_ / "worker.log", env=world["env"]))
        first = stack.enter_context(beat(world, "beat-a"))
        wait_for(lambda: client.exists(LOCK_KEY), 30, "a beat to lead")
        stack.enter_context(beat(world, "beat-b"))

        # the leader catches up the latest missed slot, once
        [caught_up] = wait_for(lambda: ran(store), 60, "the caught-up slot to run")
        slot0 = parse_slot_id(caught_up["slot"])
        assert datetime.now(UTC) - slot0 < timedelta(seconds=GRACE_S)
        assert sent_slots(dir_ / "beat-a.log") == [caught_up["slot"]]  # a led, b waited
        assert sent_slots(dir_ / "beat-b.log") == []

        # the leader dies without releasing its lock, and comes back as a standby
        os.killpg(first.pid, signal.SIGKILL)
        first.popen.wait(10)
        killed_at = datetime.now(UTC)
        stack.enter_context(beat(world, "beat-a2"))

        # the next slot runs once, from b (it takes the lock over after 5 s) or a2
        def after_the_kill() -> list[dict[str, Any]]:
            later = [r for r in ran(store) if parse_slot_id(r["slot"]) > killed_at]
            return later if len(ran(store)) >= 2 else []

        wait_for(after_the_kill, 100, "a slot after the leader was killed to run")
        time.sleep(3)  # a second firing of any slot would show up by now

    records = runs(store, POLICY)
    assert {r["outcome"] for r in records} == {"ran"}, records  # no duplicate reached a worker
    assert all(r["vms"] == 0 and r["jobs"] == [] for r in records)
    slots = sorted(parse_slot_id(r["slot"]) for r in records)
    assert slots[0] == slot0 and len(set(slots)) == len(slots)  # each slot ran once
    assert all(b - a == MINUTE for a, b in pairwise(slots)), slots
    logs = {name: sent_slots(dir_ / f"beat-{name}.log") for name in ("a", "b", "a2")}
    sent = Counter(s for found in logs.values() for s in found)
    assert set(sent.values()) == {1}, logs  # no beat sent a slot twice, nor after a restart
    assert sorted(sent) == [slot_text(s) for s in slots], (logs, records)
    assert logs["b"] or logs["a2"], logs  # a standby took over
    client.close()
    close_app(app)


MINUTE = timedelta(minutes=1)


def slot_text(slot: datetime) -> str:
    return slot.strftime("%Y-%m-%dT%H:%MZ")


def service_app(world: dict[str, Any]) -> Any:
    return create_app(world["settings"])
