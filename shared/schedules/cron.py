"""Cron expressions evaluated in a time zone: the slots of a policy's schedule.

A slot is a wall-clock time of the policy's zone that the expression names (`0 2 * * *` in
Europe/Berlin: 02:00 Berlin time, every day), turned into one instant:

- a wall-clock time that occurs twice (clocks going back) is one slot, at its first occurrence;
  the repeated hour has no slots of its own, so a schedule never runs twice for one time of day;
- a wall-clock time that does not occur (clocks going forward) runs when the clock jumps (02:30
  on the night summer time starts runs at 03:00 summer time), like Vixie cron; several such
  times are one slot.

Instants are in UTC. The syntax is Vixie cron's five fields (minute 0-59, hour 0-23, day of
month 1-31, month 1-12 or jan-dec, day of week 0-7 or sun-sat, 0 and 7 both Sunday) with `*`,
lists, ranges and steps, and the macros @yearly @annually @monthly @weekly @daily @midnight
@hourly. As in cron, when both day fields are restricted (neither starts with `*`) a day matches
either; otherwise both. Quartz's `L`, `W`, `#` and `?` are not supported.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SEARCH_DAYS = 8 * 366 + 1  # 29 February on a given weekday, with both day fields restricted
FORMAT_HINT = "give 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'"
_MINUTE = timedelta(minutes=1)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Berlin, UTC), or ValueError saying what to give."""
    try:
        if not name or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{name!r} is not an IANA time zone: give a name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression and the zone it is read in."""

    expression: str
    timezone: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 Sunday .. 6 Saturday
    either_day: bool  # both day fields restricted: a day matches either

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """The expression in `timezone`, or ValueError naming what is wrong."""
        text = expression.strip()
        fields = MACROS.get(text.lower(), text).split()
        if len(fields) != 5:
            raise ValueError(f"{expression!r} is not a cron expression: {FORMAT_HINT}")
        try:
            minutes = _field(fields[0], 0, 59)
            hours = _field(fields[1], 0, 23)
            days = _field(fields[2], 1, 31)
            months = _field(fields[3], 1, 12, MONTHS, first=1)
            weekdays = {d % 7 for d in _field(fields[4], 0, 7, WEEKDAYS)}
        except ValueError as e:
            raise ValueError(f"{expression!r} is not a cron expression: {e}") from None
        zone(timezone)
        return cls(
            expression=text,
            timezone=timezone,
            minutes=tuple(sorted(minutes)),
            hours=tuple(sorted(hours)),
            days=frozenset(days),
            months=frozenset(months),
            weekdays=frozenset(weekdays),
            either_day=not fields[2].startswith("*") and not fields[4].startswith("*"),
        )

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        return by_date or by_weekday if self.either_day else by_date and by_weekday

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after `after` (naive: UTC), in UTC; None: there is none
        (an expression such as '0 0 30 2 *' names no day)."""
        moment = _utc(after)
        first = moment.astimezone(self.zone).date() - timedelta(days=1)
        for offset in range(SEARCH_DAYS):
            for slot in _day_slots(self, first + timedelta(days=offset)):
                if slot > moment:
                    return slot
        return None

    def slots(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """The slots in (after, until], in order."""
        slot = self.next_after(after)
        end = _utc(until)
        while slot is not None and slot <= end:
            yield slot
            slot = self.next_after(slot)

    def never_runs(self) -> bool:
        return self.next_after(datetime(2000, 1, 1, tzinfo=UTC)) is None


@dataclass(frozen=True)
class Due:
    """What a scheduler does now with a policy whose last slot ran at `last_run`."""

    slot: datetime | None  # run this slot now; None: nothing to run
    missed_from: datetime | None  # the first of the slots passed over without a run
    next: datetime | None  # the first slot after now


def due(cron: Cron, last_run: datetime, now: datetime, grace: timedelta) -> Due:
    """The catch-up rule: of the slots in (last_run, now], the most recent runs, once, when
    it is at most `grace` old; every other one (and that one when it is older) is missed."""
    now = _utc(now)
    upcoming = cron.next_after(now)
    first = cron.next_after(last_run)
    if first is None or first > now:
        return Due(None, None, upcoming)
    window = max(_utc(last_run), now - grace - timedelta(microseconds=1))
    latest = None
    for latest in cron.slots(window, now):  # noqa: B007  (the last one is wanted)
        pass
    missed_from = first if latest is None or first < latest else None
    return Due(latest, missed_from, upcoming)


def next_run_view(expression: str, timezone: str, now: datetime | None = None) -> dict[str, str]:
    """The next slot as `drover policy list` and the API show it: local and UTC."""
    cron = Cron.parse(expression, timezone)
    slot = cron.next_after(now or datetime.now(UTC))
    if slot is None:
        return {"timezone": timezone, "at": "", "utc": ""}
    local = slot.astimezone(cron.zone)
    return {
        "timezone": timezone,
        "at": local.isoformat(),
        "utc": slot.isoformat().replace("+00:00", "Z"),
        "local_text": local.strftime("%Y-%m-%d %H:%M %Z"),
    }


def slot_id(slot: datetime) -> str:
    """A slot as it names dedup keys and run records: UTC, to the minute."""
    return _utc(slot).strftime("%Y-%m-%dT%H:%MZ")


def parse_slot_id(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)


# -----------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@functools.lru_cache(maxsize=1024)
def _day_slots(cron: Cron, day: date) -> tuple[datetime, ...]:
    """The slots of one local day, in UTC: in wall-clock order, which is also time order
    (a repeated time is taken at its first occurrence, a skipped one at the jump)."""
    if not cron.matches_day(day):
        return ()
    tz = cron.zone
    found: list[datetime] = []
    for hour in cron.hours:
        for minute in cron.minutes:
            slot = _instant(datetime(day.year, day.month, day.day, hour, minute), tz)
            if not found or slot > found[-1]:
                found.append(slot)
    return tuple(found)


def _instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant the clocks of `tz` show `wall`, or, for a time they skip, the instant
    they jump over it."""
    moment = wall
    for _ in range(24 * 60):
        instant = moment.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first occurrence
        if instant.astimezone(tz).replace(tzinfo=None) == moment:
            return instant
        moment += _MINUTE  # in a gap: the first wall-clock minute after it
    raise ValueError(f"{wall} does not occur in {tz.key}")


def _field(text: str, low: int, high: int, names: tuple[str, ...] = (), first: int = 0) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        values |= _part(part, low, high, names, first)
    return values


def _part(part: str, low: int, high: int, names: tuple[str, ...], first: int) -> set[int]:
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise ValueError(f"{part!r}: the step after '/' must be a positive number")
        step = int(step_text)
    if base == "*":
        start, end = low, high
    elif "-" in base:
        left, _, right = base.partition("-")
        start, end = _value(left, low, high, names, first), _value(right, low, high, names, first)
        if start > end:
            raise ValueError(f"{part!r}: the range runs backwards")
    else:
        start = _value(base, low, high, names, first)
        end = high if slash else start
    return set(range(start, end + 1, step))


def _value(text: str, low: int, high: int, names: tuple[str, ...], first: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + first
    if not text.isdigit():
        what = f" or a name ({', '.join(names)})" if names else ""
        raise ValueError(f"{text!r} is not a number from {low} to {high}{what}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range ({low}-{high})")
    return value
