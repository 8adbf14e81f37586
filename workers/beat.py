"""The scheduler process (`drover beat`): RedBeat, with one entry per scheduled policy.

Celery beat with RedBeat's scheduler keeps every entry and its last run in Redis, so a restarted
scheduler carries on where the last one stopped, and holds a Redis lock while it runs: of
several replicas, one leads and the others wait for the lock (taken over once the leader has not
renewed it for five ticks, `--max-interval` x 5). Keys (RedBeat's, under `drover:beat:`):

    drover:beat:policy:<name>    hash   a policy's entry: definition (task, schedule) and meta
                                        (last_run_at: the last slot sent, or when the entry
                                        was made)
    drover:beat:reap             hash   the reaper's entry (the app's beat_schedule)
    drover:beat::schedule        zset   entry keys by when they are due next
    drover:beat::statics         set    the names of the app's beat_schedule entries
    drover:beat:lock             string the leader's lock (TTL)

Time zones. RedBeat's crontab is evaluated in the Celery app's time zone, and its JSON encoder
knows only interval, crontab and rrule schedules (an rrule keeps a fixed UTC offset, not a zone,
so it drifts by an hour at every DST change). Policies each name their own zone, so an entry's
schedule here is `PolicyCron`: the policy's cron expression and IANA zone, evaluated by
`shared.schedules.cron` (DST rules in its docstring), stored in the entry's definition as
`{"__type__": "drover_cron", "cron": ..., "timezone": ...}` by `PolicyEntry`, which extends
RedBeat's entry with that one type (RedBeat's own types encode as before). The Celery app
stays in UTC; nothing else depends on its zone. Only Drover's scheduler (`DroverScheduler`)
reads these entries.

Entries follow the stored policies: the orchestrator's Service puts or removes a policy's entry
when the policy is put or removed (`sync_policy`), and every scheduler reconciles them all with
the stored policies when it starts (`reconcile`).

Catch-up rule. A slot fires at the first tick at or after it. When a tick finds slots that did
not fire (no scheduler ran, or the leader died and its lock had not expired yet), the most recent
of them runs once if it is at most `--grace` old (default 1 hour); the others are skipped and
logged ("slots missed"). A fired slot sends `drover.policy.run_scheduled` to `drover.default`
with the slot; the task runs the policy once per (policy, slot) (`shared.schedules.runs`), so a
slot sent twice (a leader that died between sending and recording) still runs once, and a
message that reaches a worker later than the grace period is skipped too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule, schedstate
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import (
    RedBeatConfig,
    RedBeatScheduler,
    RedBeatSchedulerEntry,
    get_redis,
)

from shared.logging import get_logger
from shared.schedules.cron import Cron, due, slot_id
from shared.settings import Settings
from shared.state import StateStore

KEY_PREFIX = "drover:beat:"
LOCK_KEY = KEY_PREFIX + "lock"
ENTRY_PREFIX = "policy:"  # entry names: policy:<policy name>
RUN_SCHEDULED = "drover.policy.run_scheduled"
CONTROL_QUEUE = "drover.default"
DEFAULT_MAX_INTERVAL_S = 10.0
DEFAULT_GRACE_S = 3600.0
GRACE_CONF = "drover_schedule_grace_s"
REDIS_RETRY_S = 120  # RedBeat's calls ride out a Redis restart this long
_TYPE = "drover_cron"
log = get_logger(__name__)


def configure(app: Celery, settings: Settings, grace_s: float = DEFAULT_GRACE_S) -> Celery:
    """RedBeat's settings on `app`: Drover's Redis and key prefix, the lock on."""
    app.conf.update(
        redbeat_redis_url=settings.redis_url,
        redbeat_redis_options={"retry_period": REDIS_RETRY_S},
        redbeat_key_prefix=KEY_PREFIX,
        redbeat_lock_key=LOCK_KEY,
        beat_scheduler="workers.beat:DroverScheduler",
        **{GRACE_CONF: grace_s},
    )
    app.redbeat_conf = RedBeatConfig(app)  # read now: RedBeat caches it on the app
    app.redbeat_redis = None  # connect to this Redis at first use
    return app


class PolicyCron(BaseSchedule):  # type: ignore[misc]
    """A policy's cron expression in its own zone, as a Celery schedule."""

    def __init__(self, cron: str, timezone: str = "UTC", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cron = Cron.parse(cron, timezone)

    def next_after(self, moment: datetime) -> datetime | None:
        return self.cron.next_after(moment)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        slot = self.cron.next_after(last_run_at)
        return None if slot is None else slot - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Celery's contract; the scheduler applies the catch-up rule (`due`) instead."""
        now = self.now()
        slot = self.cron.next_after(last_run_at)
        upcoming = self.cron.next_after(now)
        wait = _seconds_until(upcoming, now)
        if slot is not None and slot <= now:
            return schedstate(True, wait)
        return schedstate(False, _seconds_until(slot, now))

    def encode(self) -> dict[str, str]:
        return {"__type__": _TYPE, "cron": self.cron.expression, "timezone": self.cron.timezone}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PolicyCron) and other.cron == self.cron

    def __hash__(self) -> int:
        return hash(self.cron)

    def __repr__(self) -> str:
        return f"<PolicyCron {self.cron.expression!r} {self.cron.timezone}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.cron.expression, self.cron.timezone))


class _Encoder(RedBeatJSONEncoder):  # type: ignore[misc]
    def default(self, obj: Any) -> Any:
        if isinstance(obj, PolicyCron):
            return obj.encode()
        return super().default(obj)


class _Decoder(RedBeatJSONDecoder):  # type: ignore[misc]
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == _TYPE:
            return PolicyCron(d["cron"], d.get("timezone", "UTC"))
        return super().dict_to_object(d)


class PolicyEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """RedBeat's entry, which also stores `PolicyCron` schedules."""

    @staticmethod
    def decode_definition(definition: str) -> Any:
        return json.loads(definition, cls=_Decoder)

    @property
    def due_at(self) -> datetime | None:
        if not isinstance(self.schedule, PolicyCron):
            inherited: datetime | None = super().due_at
            return inherited
        return self.schedule.next_after(self.last_run_at or self._default_now())

    def save(self) -> PolicyEntry:
        """RedBeat's save, with the encoder that knows `PolicyCron`."""
        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=_Encoder))
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


# entries of policies ----------------------------------------------------------------------


def entry_name(policy: str) -> str:
    return ENTRY_PREFIX + policy


def put_entry(app: Celery, policy: str, cron: str, timezone: str = "UTC") -> PolicyEntry:
    """Create or update the policy's entry; an existing entry keeps its last run, a new one
    starts now (its first slot is the next one)."""
    name = entry_name(policy)
    try:
        last_run_at = PolicyEntry.from_key(PolicyEntry.generate_key(app, name), app=app).last_run_at
    except (KeyError, ValueError, TypeError):  # none yet, or one that no longer decodes
        last_run_at = None
    entry = PolicyEntry(
        name=name,
        task=RUN_SCHEDULED,
        schedule=PolicyCron(cron, timezone),
        kwargs={"policy": policy},
        options={"queue": CONTROL_QUEUE},
        app=app,
    )
    entry.last_run_at = last_run_at or datetime.now(UTC)
    return entry.save()


def remove_entry(app: Celery, policy: str) -> None:
    PolicyEntry(name=entry_name(policy), app=app).delete()


def sync_policy(
    app: Celery, settings: Settings, policy: str, schedule: Mapping[str, Any] | None
) -> None:
    """The Service's hook: the policy's entry as its stored schedule says (none: removed)."""
    if not app.conf.get("redbeat_redis_url"):
        configure(app, settings)
    if schedule is None:
        remove_entry(app, policy)
        return
    put_entry(app, policy, str(schedule["cron"]), str(schedule.get("timezone") or "UTC"))


def policy_entries(app: Celery) -> list[str]:
    """The names of the policies that have an entry."""
    prefix = PolicyEntry.generate_key(app, ENTRY_PREFIX)
    keys = get_redis(app).zrange(app.redbeat_conf.schedule_key, 0, -1)
    return sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))


def reconcile(app: Celery, documents: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Entries for exactly the stored policies that have a schedule."""
    scheduled: dict[str, Mapping[str, Any]] = {}
    for document in documents:
        if document.get("schedule"):
            scheduled[str(document["name"])] = document["schedule"]
    report: dict[str, list[str]] = {"scheduled": [], "removed": [], "invalid": []}
    for name, schedule in sorted(scheduled.items()):
        try:
            put_entry(app, name, str(schedule["cron"]), str(schedule.get("timezone") or "UTC"))
        except (KeyError, ValueError) as e:
            log.error("stored policy has an invalid schedule", policy=name, error=str(e))
            report["invalid"].append(name)
            continue
        report["scheduled"].append(name)
    for name in policy_entries(app):
        if name not in report["scheduled"]:
            remove_entry(app, name)
            report["removed"].append(name)
    return report


# the scheduler --------------------------------------------------------------------------


class DroverScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat's scheduler with policy entries: reconciled at start, fired by the catch-up
    rule (module docstring), each firing carrying its slot."""

    Entry = PolicyEntry

    def setup_schedule(self) -> None:
        super().setup_schedule()
        store = StateStore.from_url(self.app.redbeat_conf.redis_url)
        report = reconcile(self.app, store.documents("policy"))
        log.info("policy schedules reconciled", **report)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=float(self.app.conf.get(GRACE_CONF) or DEFAULT_GRACE_S))

    def maybe_due(self, entry: Any, **kwargs: Any) -> float | None:
        schedule = entry.schedule
        if not isinstance(schedule, PolicyCron) or not entry.enabled:
            return super().maybe_due(entry, **kwargs)  # type: ignore[no-any-return]
        now = self.app.now()
        last_run_at = entry.last_run_at or now
        decision = due(schedule.cron, last_run_at, now, self.grace)
        if decision.missed_from is not None:
            log.warning(
                "slots missed",
                entry=entry.name,
                first=slot_id(decision.missed_from),
                runs=slot_id(decision.slot) if decision.slot else "none (older than the grace)",
                grace_s=self.grace.total_seconds(),
            )
        if decision.slot is None:
            if decision.missed_from is not None or entry.last_run_at is None:
                entry.reschedule(now)  # passed over: wait for the next slot
            return _seconds_until(decision.next, now)
        slot = slot_id(decision.slot)
        entry.kwargs = {**(entry.kwargs or {}), "slot": slot, "grace_s": self.grace.total_seconds()}
        log.info("slot due", entry=entry.name, task=entry.task, slot=slot)
        try:
            self.apply_async(entry, **kwargs)
        except Exception as e:
            log.exception("sending the slot's task failed", entry=entry.name, error=str(e))
        return _seconds_until(decision.next, now)


def _seconds_until(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    return max(0.0, (moment - now).total_seconds())


def run_beat(
    settings: Settings,
    max_interval_s: float = DEFAULT_MAX_INTERVAL_S,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """`drover beat`: celery beat with `DroverScheduler`, in the foreground."""
    from workers.app import create_app

    app = configure(create_app(settings), settings, grace_s)
    beat = app.Beat(
        scheduler=DroverScheduler,
        max_interval=max_interval_s,
        loglevel=settings.log.level,
        quiet=True,
    )
    beat.run()
