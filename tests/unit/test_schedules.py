"""Policy schedules: cron in a time zone (DST), the catch-up rule, one run per slot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.policies import validate_policy
from shared.errors import ConfigError
from shared.schedules import runs
from shared.schedules.cron import Cron, due, next_run_view, slot_id
from workers.beat import PolicyCron, _Decoder, _Encoder


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def slots(cron: Cron, after: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        nxt = cron.next_after(after)
        assert nxt is not None
        found.append(nxt)
        after = nxt
    return found


# cron in a time zone -------------------------------------------------------------------


def test_a_daily_slot_follows_the_zone_across_both_dst_changes() -> None:
    cron = Cron.parse("0 1 * * *", "Europe/Berlin")  # 01:00 Berlin: 00:00Z in winter
    spring = slots(cron, utc(2025, 3, 29, 12), 2)
    assert spring == [utc(2025, 3, 30, 0), utc(2025, 3, 30, 23)]  # CET, then CEST
    autumn = slots(cron, utc(2025, 10, 25, 12), 2)
    assert autumn == [utc(2025, 10, 25, 23), utc(2025, 10, 27, 0)]  # CEST, then CET


def test_a_time_the_clocks_skip_runs_when_they_jump() -> None:
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")  # 02:30 does not exist on 30 March
    assert slots(cron, utc(2025, 3, 29, 12), 2) == [
        utc(2025, 3, 30, 1),  # 03:00 CEST, the jump
        utc(2025, 3, 31, 0, 30),  # 02:30 CEST
    ]
    new_york = Cron.parse("0 2 * * *", "America/New_York")
    assert new_york.next_after(utc(2025, 3, 8, 12)) == utc(2025, 3, 9, 7)  # 03:00 EDT


def test_a_time_the_clocks_repeat_runs_once_at_its_first_occurrence() -> None:
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")  # 02:30 happens twice on 26 October
    assert slots(cron, utc(2025, 10, 25, 12), 2) == [
        utc(2025, 10, 26, 0, 30),  # 02:30 CEST; not again at 02:30 CET (01:30Z)
        utc(2025, 10, 27, 1, 30),
    ]


def test_every_minute_across_the_spring_gap_never_goes_back() -> None:
    cron = Cron.parse("* * * * *", "Europe/Berlin")
    found = slots(cron, utc(2025, 3, 30, 0, 58), 4)
    assert found == [utc(2025, 3, 30, 0, 59), utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 1, 1),
                     utc(2025, 3, 30, 1, 2)]  # fmt: skip
    local = [s.astimezone(cron.zone).strftime("%H:%M") for s in found]
    assert local == ["01:59", "03:00", "03:01", "03:02"]


def test_the_next_run_view_gives_both_clocks() -> None:
    view = next_run_view("0 2 * * *", "Europe/Berlin", utc(2025, 7, 1, 12))
    assert view == {
        "timezone": "Europe/Berlin",
        "at": "2025-07-02T02:00:00+02:00",
        "utc": "2025-07-02T00:00:00Z",
        "local_text": "2025-07-02 02:00 CEST",
    }


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("@daily", utc(2025, 1, 1, 0, 0, 1), utc(2025, 1, 2)),
        ("@hourly", utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 1)),
        ("*/15 9-17 * * mon-fri", utc(2025, 1, 3, 17, 50), utc(2025, 1, 6, 9)),  # Fri -> Mon
        ("0 3 1 jan,jul *", utc(2025, 2, 1), utc(2025, 7, 1, 3)),
        ("0 0 * * 7", utc(2025, 1, 1), utc(2025, 1, 5)),  # 7 is Sunday too
        ("0 0 13 * 5", utc(2025, 1, 1), utc(2025, 1, 3)),  # the 13th OR a Friday, as cron
        ("0 0 29 2 *", utc(2025, 1, 1), utc(2028, 2, 29)),
        ("5/20 * * * *", utc(2025, 1, 1, 0, 6), utc(2025, 1, 1, 0, 25)),
    ],
)
def test_cron_syntax(expression: str, after: datetime, expected: datetime) -> None:
    assert Cron.parse(expression).next_after(after) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("every night", "give 5 fields"),
        ("0 2 * *", "give 5 fields"),
        ("60 2 * * *", "60 is out of range (0-59)"),
        ("0 2 L * *", "'L' is not a number from 1 to 31"),
        ("0 2 * * mon#2", "'mon#2' is not a number"),
        ("*/0 * * * *", "the step after '/' must be a positive number"),
        ("5-1 * * * *", "the range runs backwards"),
    ],
)
def test_bad_cron(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="is not a cron expression") as error:
        Cron.parse(expression)
    assert message in str(error.value)


# the policy model ------------------------------------------------------------------------


def policy(**schedule: Any) -> dict[str, Any]:
    return {"name": "p", "manager": "lab", "vms": {"names": ["x"]}, "schedule": schedule}


def test_a_schedule_is_in_utc_unless_it_names_a_zone() -> None:
    assert validate_policy(policy(cron="0 2 * * *")).schedule.timezone == "UTC"  # type: ignore[union-attr]
    berlin = validate_policy(policy(cron="@daily", timezone="Europe/Berlin")).schedule
    assert berlin is not None and (berlin.cron, berlin.timezone) == ("@daily", "Europe/Berlin")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA"),
        ({"cron": "0 2 * * *", "timezone": "../etc/passwd"}, "is not an IANA time zone"),
        ({"cron": "0 2 * * *", "timezone": ""}, "is not an IANA time zone"),
        ({"cron": "0 0 30 2 *"}, "names no date that exists"),
        ({"cron": "0 25 * * *"}, "25 is out of range"),
        ({"cron": "0 2 * * *", "tz": "UTC"}, "unknown key 'schedule.tz'"),
    ],
)
def test_bad_schedules_are_refused_with_what_to_do(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_policy(policy(**schedule))
    assert message in error.value.message and "\n" not in error.value.message


# the catch-up rule -------------------------------------------------------------------------

HOURLY = Cron.parse("0 * * * *")
HOUR = timedelta(hours=1)


def test_a_slot_due_now_runs() -> None:
    decision = due(HOURLY, utc(2025, 1, 1, 4, 0, 1), utc(2025, 1, 1, 5, 0, 1), HOUR)
    assert (decision.slot, decision.missed_from) == (utc(2025, 1, 1, 5), None)
    assert decision.next == utc(2025, 1, 1, 6)


def test_nothing_runs_before_the_slot() -> None:
    decision = due(HOURLY, utc(2025, 1, 1, 5, 0, 1), utc(2025, 1, 1, 5, 59), HOUR)
    assert (decision.slot, decision.missed_from, decision.next) == (None, None, utc(2025, 1, 1, 6))


def test_of_several_missed_slots_the_latest_within_the_grace_runs_once() -> None:
    decision = due(HOURLY, utc(2025, 1, 1, 0, 0, 1), utc(2025, 1, 1, 5, 30), HOUR)
    assert decision.slot == utc(2025, 1, 1, 5)  # 01:00 .. 04:00 skipped
    assert decision.missed_from == utc(2025, 1, 1, 1)


def test_a_missed_slot_older_than_the_grace_is_skipped() -> None:
    decision = due(Cron.parse("0 2 * * *"), utc(2025, 1, 1, 2, 0, 1), utc(2025, 1, 2, 5), HOUR)
    assert (decision.slot, decision.missed_from) == (None, utc(2025, 1, 2, 2))
    assert decision.next == utc(2025, 1, 3, 2)


# the scheduler's entries -----------------------------------------------------------------


def test_an_entry_stores_the_policy_zone() -> None:
    encoded = json.dumps({"schedule": PolicyCron("30 2 * * *", "Europe/Berlin")}, cls=_Encoder)
    assert json.loads(encoded)["schedule"] == {
        "__type__": "drover_cron",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
    }
    decoded = json.loads(encoded, cls=_Decoder)["schedule"]
    assert decoded == PolicyCron("30 2 * * *", "Europe/Berlin")
    assert decoded.next_after(utc(2025, 3, 29, 12)) == utc(2025, 3, 30, 1)


def test_celerys_own_schedules_still_encode() -> None:
    from celery.schedules import schedule

    encoded = json.dumps({"s": schedule(600.0)}, cls=_Encoder)
    assert json.loads(encoded, cls=_Decoder)["s"].run_every == timedelta(seconds=600)


# one run per slot ------------------------------------------------------------------------


class FakeRedis:
    """What `shared.schedules.runs` uses of Redis."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool | None:
        if nx and key in self.strings:
            return None
        self.strings[key] = value
        return True

    def lpush(self, key: str, value: str) -> None:
        self.lists.setdefault(key, []).insert(0, value)

    def ltrim(self, key: str, start: int, end: int) -> None:
        self.lists[key] = self.lists.get(key, [])[start : end + 1]

    def lrange(self, key: str, start: int, end: int) -> list[str]:
        return self.lists.get(key, [])[start : end + 1]

    def pipeline(self) -> FakeRedis:
        return self

    def execute(self) -> None:
        pass


class FakeStore:
    def __init__(self) -> None:
        self.redis = FakeRedis()


SLOT = "2025-01-01T02:00Z"
AT = utc(2025, 1, 1, 2, 0, 3)


class Policies:
    def __init__(self) -> None:
        self.runs: list[str] = []
        self.schedule: dict[str, Any] | None = {"cron": "0 2 * * *", "timezone": "UTC"}

    def run_policy(self, name: str) -> dict[str, Any]:
        self.runs.append(name)
        return {"policy": name, "vms": 2, "jobs": [{"job_id": "j1"}, {"job_id": "j2"}],
                "refused": [{"vm": "db", "reason": "locked"}]}  # fmt: skip

    def schedule_of(self, name: str) -> dict[str, Any] | None:
        return self.schedule


def run(store: FakeStore, policies: Policies, slot: str = SLOT, **kw: Any) -> dict[str, Any]:
    kw.setdefault("now", AT)
    return runs.run_slot(
        store,  # type: ignore[arg-type]
        "nightly",
        slot,
        policies.run_policy,
        policies.schedule_of,
        3600.0,
        **kw,
    )


def test_a_slot_fired_twice_runs_once() -> None:
    store, policies = FakeStore(), Policies()
    first = run(store, policies)
    assert (first["outcome"], first["jobs"], first["vms"], first["refused"]) == (
        "ran", ["j1", "j2"], 2, 1)  # fmt: skip
    second = run(store, policies)
    assert second["outcome"] == "duplicate"
    assert policies.runs == ["nightly"]
    assert [r["outcome"] for r in runs.runs(store, "nightly")] == ["duplicate", "ran"]  # type: ignore[arg-type]
    assert run(store, policies, "2025-01-02T02:00Z", now=utc(2025, 1, 2, 2))["outcome"] == "ran"
    assert policies.runs == ["nightly", "nightly"]


def test_a_late_or_unscheduled_slot_does_not_run() -> None:
    store, policies = FakeStore(), Policies()
    late = run(store, policies, now=utc(2025, 1, 1, 3, 0, 1))
    assert late["outcome"] == "late" and "3601 s after its slot" in late["error"]
    policies.schedule = None
    assert run(store, policies)["outcome"] == "unscheduled"
    assert policies.runs == []


def test_a_failed_run_is_recorded_and_not_retried() -> None:
    store, policies = FakeStore(), Policies()

    def broken(name: str) -> dict[str, Any]:
        raise ConfigError(f"policy {name!r} names manager 'lab', which is not registered")

    policies.run_policy = broken  # type: ignore[method-assign]
    failed = run(store, policies)
    assert failed["outcome"] == "failed" and "not registered" in failed["error"]
    assert run(store, policies)["outcome"] == "duplicate"


def test_slot_ids_are_utc_minutes() -> None:
    berlin = datetime(2025, 3, 30, 3, 0, tzinfo=Cron.parse("* * * * *", "Europe/Berlin").zone)
    assert slot_id(berlin) == "2025-03-30T01:00Z"
