"""Schedule math: when a task fires. Pure functions of the spec and a given instant.

Every instant here is an aware UTC `datetime` with whole seconds. Cron
expressions are matched on the wall clock of the task's time zone and then
mapped to instants by the contract's DST rules:

- a wall-clock time that does not exist (the spring-forward gap) fires once,
  at the first instant after the gap;
- a wall-clock time that occurs twice (fall-back) fires once, at its first
  occurrence;
- two wall-clock times that map to the same instant fire once.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from itertools import islice
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

# Expanded before croniter sees them: given a hash key, it would hash macros
# Jenkins-style, while the contract means the classic cron instants.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# How far ahead a cron expression must match at least once to be valid. Long
# enough for the rarest real calendar (29 February on a given weekday: every
# 28 years), short enough to reject `0 0 30 2 *` in milliseconds.
_NEVER_FIRES_HORIZON_YEARS = 30

# Fields croniter seeds with the hash key: `H` (hashed) and `R` (random). Day and
# month names with these letters keep the key too, which only costs sharing.
_HASHED = re.compile("[HhRr]")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says why, for a human."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration: `30s`, `5m`, `1h30m`, `1.5h`, `250ms`."""
    if not text or _DURATION_PART.sub("", text) != "":
        raise ScheduleError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    total = timedelta()
    for number, unit in _DURATION_PART.findall(text):
        total += float(number) * _DURATION_UNITS[unit]
    return total


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of a whole-second duration (`1h30m`, `45s`)."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Map a naive wall-clock time in `zone` to the instant it fires at (UTC)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        # It exists; fold=0 is the first occurrence of a repeated time.
        return first
    # A gap: fold=0 read it with the offset from before the jump (an instant
    # after the gap), fold=1 with the offset from after it (an instant before).
    # The transition lies between; find it to the second.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = first
    after_offset = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == after_offset:
            after = middle
        else:
            before = middle
    return after


@dataclass(frozen=True)
class Cron:
    """A cron expression (5 fields, or 6 with leading seconds) on a zone's wall clock."""

    expression: str
    zone: ZoneInfo
    # Seeds the `H` fields, so that one task always gets the same spread-out times;
    # empty when the expression has none, so that equal schedules share their math.
    hash_key: str

    @property
    def with_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    def times(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after `after`, in order, forever."""
        while (instant := _next_fire(self, after)) is not None:
            yield instant
            after = instant


# Every task with the same expression and zone shares these: when thousands of
# `* * * * *` tasks fall due in the same minute, the cron math is done once for
# them all instead of once each (it was the largest part of a reconcile).
@lru_cache(maxsize=1024)
def _parsed(cron: Cron) -> croniter:
    """The expression parsed: parsing is most of what building a croniter costs."""
    return croniter(
        cron.expression,
        datetime(2000, 1, 1),
        hash_id=cron.hash_key or None,
        second_at_beginning=cron.with_seconds,
        max_years_between_matches=_NEVER_FIRES_HORIZON_YEARS,
    )


@lru_cache(maxsize=4096)
def _next_fire(cron: Cron, after: datetime) -> datetime | None:
    """The first fire instant strictly after `after`; None if there is none."""
    # A shallow copy has its own position; the parsed fields it shares are
    # only read (croniter copies them before any change).
    walls = copy.copy(_parsed(cron))
    walls.set_current(after.astimezone(cron.zone).replace(tzinfo=None, microsecond=0), force=True)
    while True:
        try:
            wall = walls.get_next(datetime)
        except CroniterBadDateError:
            return None
        instant = to_instant(wall, cron.zone)
        # A wall time in the repeated hour, or one in a gap already fired, maps
        # to an instant not after the last one: it fires only once.
        if instant > after:
            return instant


@dataclass(frozen=True)
class Every:
    """A fixed interval: `anchor + k * interval` for every whole k."""

    interval: timedelta
    anchor: datetime

    def times(self, after: datetime) -> Iterator[datetime]:
        k = 0 if after < self.anchor else (after - self.anchor) // self.interval + 1
        while True:
            yield self.anchor + k * self.interval
            k += 1


@dataclass(frozen=True)
class RunAt:
    """One execution at a fixed instant."""

    at: datetime

    def times(self, after: datetime) -> Iterator[datetime]:
        if self.at > after:
            yield self.at


Schedule = Cron | Every | RunAt


def parse_cron(expression: str, zone: ZoneInfo, hash_key: str) -> Cron:
    """Validate a cron expression; raise ScheduleError with the reason if it is unusable."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text not in MACROS:
            raise ScheduleError(f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        text = MACROS[text]
    elif len(text.split()) not in (5, 6):
        raise ScheduleError(
            f"{text!r} has {len(text.split())} fields; a cron expression has 5"
            " (minute hour day-of-month month day-of-week) or 6 (with leading seconds)"
        )
    cron = Cron(text, zone, hash_key if _HASHED.search(text) else "")
    try:
        first = next(cron.times(datetime(2000, 1, 1, tzinfo=UTC)), None)
    except (CroniterBadCronError, ValueError, KeyError) as error:
        raise ScheduleError(f"{text!r} is not a valid cron expression: {error}") from None
    if first is None:
        raise ScheduleError(f"{text!r} can never fire (no matching date)")
    return cron


@dataclass(frozen=True)
class Timeline:
    """The scheduled times of one task: its schedule cut to its window and run count.

    Recurring schedules count from the task's creation (exclusive) or `start_at`
    (inclusive), whichever is later, so times before the task existed are never
    missed runs. A one-time `RunAt` has no window: it is due whenever it is.
    """

    schedule: Schedule
    created: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None

    @property
    def floor(self) -> datetime:
        """Scheduled times must be strictly after this instant."""
        if isinstance(self.schedule, RunAt):
            return datetime.min.replace(tzinfo=UTC)
        if self.start_at is not None and self.start_at > self.created:
            return self.start_at - timedelta(microseconds=1)
        return self.created

    @cached_property
    def last(self) -> datetime | None:
        """The final scheduled time, or None when the schedule never ends."""
        if self.max_runs is not None:
            final = next(islice(self._times(self.floor), self.max_runs - 1, None), None)
            if final is not None and (self.end_at is None or final <= self.end_at):
                return final
        if isinstance(self.schedule, RunAt):
            return self.schedule.at
        if self.end_at is not None:
            return self.end_at
        return None

    def _times(self, after: datetime) -> Iterator[datetime]:
        for time in self.schedule.times(max(after, self.floor)):
            if self.end_at is not None and time > self.end_at:
                return
            yield time

    def times(self, after: datetime | None = None) -> Iterator[datetime]:
        """Scheduled times strictly after `after` (default: from the start), in order."""
        last = self.last
        for time in self._times(after or self.floor):
            if last is not None and time > last:
                return
            yield time

    def next(self, after: datetime | None = None) -> datetime | None:
        return next(self.times(after), None)

    def last_until(self, instant: datetime) -> datetime | None:
        """The latest scheduled time at or before `instant`, found without a full scan."""
        window = timedelta(minutes=1)
        while True:
            start = self.floor if instant - self.floor <= window else instant - window
            found = None
            for time in self.times(start):
                if time > instant:
                    break
                found = time
            if found is not None or start == self.floor:
                return found
            window *= 2

    def between(self, after: datetime | None, until: datetime) -> list[datetime]:
        """Scheduled times in (after, until], oldest first."""
        due = []
        for time in self.times(after):
            if time > until:
                break
            due.append(time)
        return due


def jitter(key: str, scheduled: datetime, jitter_seconds: int) -> timedelta:
    """A delay in [0, jitter_seconds], the same for the same task and scheduled time."""
    if jitter_seconds <= 0:
        return timedelta()
    digest = hashlib.sha256(f"{key}@{int(scheduled.timestamp())}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (jitter_seconds + 1))
