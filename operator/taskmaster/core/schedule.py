"""Schedule math: when a task fires. Pure functions of the spec and a given instant.

Every instant here is an aware UTC `datetime` with whole seconds. Cron
expressions are matched on the wall clock of the task's time zone and then
mapped to instants by the contract's DST rules:

- a wall-clock time that does not exist (the spring-forward gap) fires once,
  at the first instant after the gap;
- a fixed-time expression (its hour field names some hours) fires at a
  wall-clock time that occurs twice (fall-back) once, at its first occurrence;
- an interval-style expression (its hour field matches every hour: `*`,
  `*/1`, `0-23`) follows elapsed time, as Vixie/ISC cron does: it fires in
  both passes of a repeated hour, since each pass is real time that passes;
- two wall-clock times that map to the same instant fire once.
"""

from __future__ import annotations

import calendar
import copy
import hashlib
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cached_property, lru_cache
from itertools import islice
from zoneinfo import ZoneInfo

from cron_descriptor import ExpressionDescriptor, Options
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

# Fields croniter seeds with the hash key: `H` (hashed). Day and month names with
# this letter (THU) keep the key too, which only costs sharing.
_HASHED = re.compile("[Hh]")

# Unix seconds name and label every Job: no scheduled time before the epoch.
# And none from 2100 on: every time plus any bounded offset (deadline, jitter,
# back-off) stays a valid datetime, and the calendar maths has an end.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
# The longest `every`: a leap year.
MAX_EVERY = timedelta(days=366)
# The scheduled times one search walks one by one before it narrows or jumps:
# a cron step costs up to 0.2 ms, so no walk of one decision costs much.
WALK_STEPS = 64

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
# Each unit in nanoseconds: exact arithmetic, as Go's time.ParseDuration does.
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_DURATION_NS = int(MAX_EVERY.total_seconds()) * 1_000_000_000


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says why, for a human."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration: `30s`, `5m`, `1h30m`, `1.5h`, `250ms`.

    Durations longer than MAX_EVERY are refused: beyond it, the arithmetic of
    times would leave the calendar.
    """
    if not text or len(text) > 64 or _DURATION_PART.sub("", text) != "":
        raise ScheduleError(f"{text[:64]!r} is not a duration like 30s, 5m or 1h30m")
    nanoseconds = sum(
        (Fraction(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)),
        Fraction(0),
    )
    if nanoseconds > _MAX_DURATION_NS:
        raise ScheduleError(f"{text!r} is longer than the maximum of {MAX_EVERY.days * 24}h")
    return timedelta(microseconds=int(nanoseconds // 1000))


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
    # When day-of-month and day-of-week are both restricted: the two expressions
    # whose union it fires at (the classic rule, kept for `L`, `W` and `#` too).
    union: tuple[str, ...] = ()
    # Its hour field matches every hour: it follows elapsed time across a change.
    interval_style: bool = False

    @property
    def with_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    @property
    def parts(self) -> tuple[str, ...]:
        return self.union or (self.expression,)

    def times(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after `after`, in order, forever."""
        while (instant := _next_fire(self, after)) is not None:
            yield instant
            after = instant


# Every task with the same expression and zone shares these: when thousands of
# `* * * * *` tasks fall due in the same minute, the cron math is done once for
# them all instead of once each (it was the largest part of a reconcile).
@lru_cache(maxsize=1024)
def _parsed(cron: Cron) -> tuple[croniter, ...]:
    """Each part of the expression parsed: parsing is most of what building a croniter costs."""
    return tuple(
        croniter(
            part,
            datetime(2000, 1, 1),
            hash_id=cron.hash_key or None,
            second_at_beginning=cron.with_seconds,
            max_years_between_matches=_NEVER_FIRES_HORIZON_YEARS,
        )
        for part in cron.parts
    )


@lru_cache(maxsize=4096)
def _next_fire(cron: Cron, after: datetime) -> datetime | None:
    """The first fire instant strictly after `after`; None if there is none."""
    next_fire_of = _next_elapsed_fire_of if cron.interval_style else _next_fire_of
    fires = [
        fire
        for part, parsed in zip(cron.parts, _parsed(cron), strict=True)
        if (fire := next_fire_of(parsed, _nearest_weekday_day(part, cron), cron.zone, after))
    ]
    return min(fires, default=None)


def _walls(parsed: croniter, nearest_weekday_of: int | None, after: datetime) -> Iterator[datetime]:
    """The wall-clock times (naive) the expression matches strictly after the naive `after`,
    up to the end of the calendar the contract schedules in."""
    # A shallow copy has its own position; the parsed fields it shares are
    # only read (croniter copies them before any change).
    walls = copy.copy(parsed)
    walls.set_current(after.replace(microsecond=0), force=True)
    while True:
        try:
            wall = walls.get_next(datetime)
        except (CroniterBadDateError, ValueError, OverflowError):
            # No match within its horizon, or none before the end of the calendar.
            return
        if wall.year >= MAX_TIME.year:
            return
        if (
            nearest_weekday_of
            and calendar.monthrange(wall.year, wall.month)[1] < nearest_weekday_of
        ):
            # `31W` in a month without a 31st: no day is nearest to it. On to the
            # next month at once (not match by match: a seconds field has many).
            following = datetime(wall.year + wall.month // 12, wall.month % 12 + 1, 1)
            walls.set_current(following - timedelta(seconds=1), force=True)
            continue
        yield wall


def _next_fire_of(
    parsed: croniter, nearest_weekday_of: int | None, zone: ZoneInfo, after: datetime
) -> datetime | None:
    """Fixed-time: each wall-clock time fires once (see the module's rules)."""
    for wall in _walls(parsed, nearest_weekday_of, after.astimezone(zone).replace(tzinfo=None)):
        instant = to_instant(wall, zone)
        # A wall time in the repeated hour, or one in a gap already fired, maps
        # to an instant not after the last one: it fires only once.
        if instant > after:
            return instant
    return None


# No zone changes its offset twice within this (tzdata's closest pair since
# 1970 is weeks apart), and none shifts by more: a step that finds each change.
_OFFSET_STEP = timedelta(days=1)
# The offset changes one search may cross: more than any zone has between 1970
# and 2100 (two a year at most), so a rare day (the fifth Thursday of February)
# is found however far off it is; a bound, not a case.
_MAX_CHANGES = 1024


def _next_elapsed_fire_of(
    parsed: croniter, nearest_weekday_of: int | None, zone: ZoneInfo, after: datetime
) -> datetime | None:
    """Interval-style: the first instant after `after` whose wall-clock time matches, in
    whichever pass of the clock it falls; matches in a gap fire once, when it ends.

    Between two offset changes wall time and instants map one to one: the
    search finds the next match under the offset in force, and if an offset
    change comes first, goes on from it under the new offset (from the wall
    time the clock shows then: after a fall-back that is the repeated hour
    again)."""
    position = after
    offset = _offset(zone, after)
    wall = after + offset  # as a naive wall time below
    for _ in range(_MAX_CHANGES):
        match = next(_walls(parsed, nearest_weekday_of, wall.replace(tzinfo=None)), None)
        if match is None:
            return None
        candidate = match.replace(tzinfo=UTC) - offset
        change = _offset_change(zone, position, candidate, offset)
        if change is None:
            return candidate
        new_offset = _offset(zone, change)
        if new_offset > offset and match.replace(tzinfo=UTC) < change + new_offset:
            return change  # the match is in the gap the change opens
        position, offset = change, new_offset
        # Matches from the wall time the clock shows at the change, inclusive.
        wall = change + new_offset - timedelta(seconds=1)
    return None


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    return offset if offset is not None else timedelta()


def _offset_change(
    zone: ZoneInfo, after: datetime, until: datetime, offset: timedelta
) -> datetime | None:
    """The first instant in (after, until] whose offset is not `offset`, to the second."""
    start = after
    while start < until:
        end = min(start + _OFFSET_STEP, until)
        if _offset(zone, end) != offset:
            before = start
            while end - before > timedelta(seconds=1):
                middle = (before + (end - before) / 2).replace(microsecond=0)
                if _offset(zone, middle) != offset:
                    end = middle
                else:
                    before = middle
            return end
        start = end
    return None


def _nearest_weekday_day(part: str, cron: Cron) -> int | None:
    """The n of an `nW` day-of-month, if the part has one."""
    fields = part.split()
    match = re.fullmatch(r"(\d+)W", fields[3 if cron.with_seconds else 2].upper())
    return int(match[1]) if match else None


@dataclass(frozen=True)
class Crons:
    """Several cron expressions (`schedules`), each on its zone's clock: the union of
    their times, one fire per instant."""

    crons: tuple[Cron, ...]

    def times(self, after: datetime) -> Iterator[datetime]:
        while (
            instant := min(
                filter(None, (_next_fire(cron, after) for cron in self.crons)), default=None
            )
        ) is not None:
            yield instant
            after = instant


@dataclass(frozen=True)
class Every:
    """A fixed interval: `anchor + k * interval` for every whole k."""

    interval: timedelta
    anchor: datetime

    def index(self, after: datetime) -> int:
        """The k of the first time strictly after `after`."""
        return 0 if after < self.anchor else (after - self.anchor) // self.interval + 1

    def times(self, after: datetime) -> Iterator[datetime]:
        k = self.index(after)
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


Schedule = Cron | Crons | Every | RunAt


_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# The forms each field takes (the contract's, docs/schedules.md): anything else is
# refused with what the field does take, before croniter reads it.
_VALUE = r"(\d+|[A-Za-z]{3})"
_COMMON = rf"(\*|H|H\(\d+-\d+\)|{_VALUE}(-{_VALUE})?)(/\d+)?"
_FORMS = {
    "second": (_COMMON, "numbers, ranges (a-b), steps (*/n, a-b/n), lists and H"),
    "minute": (_COMMON, "numbers, ranges (a-b), steps (*/n, a-b/n), lists and H"),
    "hour": (_COMMON, "numbers, ranges (a-b), steps (*/n, a-b/n), lists and H"),
    "day-of-month": (
        rf"{_COMMON}|\?|L|\d+W",
        "numbers, ranges, steps, lists, H, ? (any day), L (the last day of the month)"
        " and nW (the weekday nearest day n, within its month)",
    ),
    "month": (_COMMON, "numbers 1-12 or JAN-DEC, ranges, steps, lists and H"),
    "day-of-week": (
        rf"{_COMMON}|\?|{_VALUE}#[1-5]",
        "numbers 0-7 or SUN-SAT, ranges, steps, lists, H, ? (any day)"
        " and d#n (the nth weekday d of the month, like 5#2);"
        " L and W belong to day-of-month (dL, the last weekday d, is not supported)",
    ),
}
_EQUAL_ENDS = re.compile(r"([^-/]+)-([^-/]+)(/.*)?")
# Jenkins' rule: a hashed day of the month is one every month has.
_HASHED_DAYS = 28


def _normalized(fields: list[str], hash_key: str) -> list[str]:
    """The fields as croniter should read them, by the contract's rules where its own differ:

    - `R` (random) is refused: croniter draws it anew on every parse, so a task's
      time would change on every restart and between the webhook and the operator;
    - a range with equal ends (`5-5`, `MON-MON`) is that one value (croniter reads
      the whole field);
    - `H` alone in day-of-month is a day from 1 to 28, one every month has.
    """
    names = (("second",) if len(fields) == 6 else ()) + _FIELD_NAMES
    normalized = []
    for name, value in zip(names, fields, strict=True):
        elements = []
        for given in value.split(","):
            element, upper = given, given.upper()
            if upper == "R" or upper.startswith(("R/", "R(")):
                raise ScheduleError(
                    f"the {name} field {value!r} uses R (random), which is not supported:"
                    " use H for a value spread per task and stable"
                )
            form, supported = _FORMS[name]
            if not re.fullmatch(form, upper):
                raise ScheduleError(
                    f"the {name} field {value!r} has {given!r}, a form that is not"
                    f" supported; the {name} field takes {supported}"
                )
            ends = _EQUAL_ENDS.fullmatch(element)
            if ends and ends[1].upper() == ends[2].upper():
                element = ends[1]
            if name == "day-of-month" and upper == "H":
                digest = hashlib.sha256(f"{hash_key}#day-of-month".encode()).digest()
                element = str(int.from_bytes(digest[:8], "big") % _HASHED_DAYS + 1)
            elements.append(element)
        normalized.append(",".join(elements))
    return normalized


def _union(fields: list[str]) -> tuple[str, ...]:
    """When both day fields are restricted and one uses L, W or #: the two expressions
    whose union the schedule is (the classic rule: a day matching either field)."""
    day, weekday = len(fields) - 3, len(fields) - 1
    restricted = [fields[i] not in ("*", "?") for i in (day, weekday)]
    special = any(c in fields[i].upper() for i in (day, weekday) for c in "LW#")
    if not (all(restricted) and special):
        return ()
    by_day = [*fields[:weekday], "*"]
    by_weekday = [*fields[:day], "*", *fields[day + 1 :]]
    return (" ".join(by_day), " ".join(by_weekday))


# An H of the expression (not the H of a day name such as THU).
_HASH_FIELD = re.compile(r"(?<![A-Z])H(?![A-Z])")


def hashed_fields(cron: Cron) -> str:
    """The expression with each field that uses H written as the values it hashes to."""
    fields = cron.expression.split()
    expanded = _parsed(cron)[0].expanded
    # croniter keeps the seconds last; the expression has them first.
    order = [5, 0, 1, 2, 3, 4] if cron.with_seconds else [0, 1, 2, 3, 4]
    return " ".join(
        ",".join(str(v) for v in expanded[index]) if _HASH_FIELD.search(field.upper()) else field
        for field, index in zip(fields, order, strict=True)
    )


def describe_cron(cron: Cron) -> str:
    """The expression in words (cron-descriptor's English, 24-hour clock), with its
    H fields as the values they hash to for this task."""
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        text: str = ExpressionDescriptor(hashed_fields(cron), options).get_description()
    except Exception:  # its parser's own errors, for forms it does not know: no words then
        return cron.expression
    return text


def _every_hour(parsed: croniter) -> bool:
    """Whether the hour field matches every hour (`*`, `*/1`, `0-23`, a list of all)."""
    # croniter keeps the seconds last: the hour is the second field either way.
    hours: Sequence[object] = parsed.expanded[1]
    return list(hours) == ["*"] or set(hours) == set(range(24))


def _plainly(words: str) -> str:
    return words[0].lower() + words[1:]


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
    fields = _normalized(text.split(), hash_key)
    # Interned: thousands of tasks share an expression (and its text in memory).
    text = sys.intern(" ".join(fields))
    cron = Cron(text, zone, hash_key if _HASHED.search(text) else "", _union(fields))
    try:
        cron = replace(cron, interval_style=_every_hour(_parsed(cron)[0]))
        first = next(cron.times(datetime(2000, 1, 1, tzinfo=UTC)), None)
    except CroniterBadCronError as error:
        raise ScheduleError(f"{text!r} is not a valid cron expression: {error}") from None
    except Exception as error:
        # croniter answers some malformed fields with whatever its parsing
        # code raises (ValueError, KeyError, IndexError, OverflowError...):
        # each is an invalid expression, never the operator's failure.
        raise ScheduleError(
            f"{text!r} is not a valid cron expression: {type(error).__name__}: {error}"
        ) from None
    if first is None:
        raise ScheduleError(
            f"{text!r} can never fire: no date matches it ({_plainly(describe_cron(cron))})"
        )
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
            return MIN_TIME - timedelta.resolution
        if self.start_at is not None and self.start_at > self.created:
            return self.start_at - timedelta(microseconds=1)
        return self.created

    @cached_property
    def last(self) -> datetime | None:
        """The final scheduled time, or None when the schedule never ends."""
        if self.max_runs is not None:
            final = self._nth(self.max_runs)
            if final is not None and (self.end_at is None or final <= self.end_at):
                return final
        if isinstance(self.schedule, RunAt):
            return self.schedule.at
        if self.end_at is not None:
            return self.end_at
        return None

    def _nth(self, n: int) -> datetime | None:
        """The n-th time of the window (1 is the first): arithmetic for `every`, else a
        walk of n steps (maxRuns is bounded, spec.MAX_RUNS)."""
        schedule = self.schedule
        if isinstance(schedule, Every):
            final = schedule.anchor + (schedule.index(self.floor) + n - 1) * schedule.interval
            return final if final < MAX_TIME else None
        return next(islice(self._times(self.floor), n - 1, None), None)

    def _times(self, after: datetime) -> Iterator[datetime]:
        for time in self.schedule.times(max(after, self.floor, MIN_TIME - timedelta.resolution)):
            if (self.end_at is not None and time > self.end_at) or time >= MAX_TIME:
                return
            yield time

    def count(self, after: datetime, until: datetime) -> int | None:
        """How many scheduled times lie in (after, until], when that is known without
        walking them (`every` and `runAt`); None for a cron expression."""
        schedule = self.schedule
        if isinstance(schedule, RunAt):
            return 1 if after < schedule.at <= until else 0
        if not isinstance(schedule, Every):
            return None
        ends = [t for t in (until, self.end_at, self.last, MAX_TIME - timedelta.resolution) if t]
        return max(0, schedule.index(min(ends)) - schedule.index(max(after, self.floor)))

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
        """The latest scheduled time at or before `instant`, in a bounded number of steps.

        It looks at windows ending at `instant`: doubled while they hold no time,
        halved (between the last empty one and this) while they hold more times
        than it walks, until one holds a few: its newest is the answer.
        """
        empty, crowded = timedelta(), None
        window = timedelta(minutes=1)
        while True:
            start = self.floor if instant - self.floor <= window else instant - window
            newest, complete = self._newest(start, instant)
            if complete and newest is not None:
                return newest
            if complete:
                if start == self.floor:
                    return None
                empty = window
                window = window * 2 if crowded is None else (empty + crowded) / 2
            else:
                crowded = window
                window = (empty + crowded) / 2
            if crowded is not None and crowded - empty < timedelta(seconds=1):
                # Times are at least a second apart, so this cannot be: a bound, not a case.
                return None

    def _newest(self, after: datetime, until: datetime) -> tuple[datetime | None, bool]:
        """The newest time in (after, until], and whether it was found within WALK_STEPS."""
        newest = None
        for walked, time in enumerate(self.times(after)):
            if time > until:
                return newest, True
            if walked == WALK_STEPS:
                return newest, False
            newest = time
        return newest, True


def jitter(key: str, scheduled: datetime, jitter_seconds: int) -> timedelta:
    """A delay in [0, jitter_seconds], the same for the same task and scheduled time."""
    if jitter_seconds <= 0:
        return timedelta()
    digest = hashlib.sha256(f"{key}@{int(scheduled.timestamp())}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (jitter_seconds + 1))
