"""Cron schedules across every DST change of three zones, 2026 to 2030.

The rule (core/schedule.py): a fixed-time expression (its hour field names
some hours) runs a wall time skipped by a spring-forward change once, at the
end of the gap, and a wall time repeated by a fall-back change once, at its
first occurrence. An interval-style expression (its hour field matches every
hour) follows elapsed time: it runs in both passes of a repeated hour, and
the matches in a gap give one run, at the end of the gap. No instant runs
twice.

The changes are found in the zone data, not written down: Europe/Berlin and
America/New_York shift by an hour, Australia/Lord_Howe by 30 minutes, and the
southern zone falls back in April and springs forward in October.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest

from taskmaster.core.schedule import parse_cron

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
YEARS = range(2026, 2031)
# Each change is looked at from this long before it to this long after it.
AROUND = timedelta(hours=6)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Change:
    """A change of a zone's UTC offset."""

    zone: str
    at: datetime  # the first instant (UTC) of the new offset
    before: timedelta  # the offset until then
    after: timedelta  # the offset from then on

    @property
    def forward(self) -> bool:
        return self.after > self.before

    @property
    def walls(self) -> tuple[datetime, datetime]:
        """The wall times (naive) skipped by a spring-forward change, or repeated by a
        fall-back one: [start, end)."""
        old, new = _naive(self.at + self.before), _naive(self.at + self.after)
        return (old, new) if self.forward else (new, old)

    @property
    def local_day(self) -> date:
        return self.at.astimezone(ZoneInfo(self.zone)).date()

    @property
    def start(self) -> datetime:
        return self.at - AROUND

    @property
    def end(self) -> datetime:
        return self.at + AROUND

    def __str__(self) -> str:
        return f"{self.zone}-{self.local_day}-{'forward' if self.forward else 'back'}"


def _naive(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None)


def offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    found = instant.astimezone(zone).utcoffset()
    assert found is not None
    return found


def changes_in(zone_name: str, year: int) -> list[Change]:
    """The offset changes of a zone in a year (UTC), each to the second: a day-by-day
    walk finds the day, a bisection the instant."""
    zone = ZoneInfo(zone_name)
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        following = day + timedelta(days=1)
        if offset(zone, following) != offset(zone, day):
            low, high = day, following  # offset(low) is the old one, offset(high) the new
            while high - low > timedelta(seconds=1):
                middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
                if offset(zone, middle) == offset(zone, day):
                    low = middle
                else:
                    high = middle
            found.append(Change(zone_name, high, offset(zone, low), offset(zone, high)))
        day = following
    return found


CHANGES = [change for zone in ZONES for year in YEARS for change in changes_in(zone, year)]
SPRING = [change for change in CHANGES if change.forward]
FALL = [change for change in CHANGES if not change.forward]


def each(changes: list[Change]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("change", changes, ids=str)


# -- the expressions and what each matches on the wall clock -----------------------

Matches = Callable[[datetime], bool]

INTERVAL_STYLE: dict[str, Matches] = {
    "* * * * *": lambda wall: True,
    "0 * * * *": lambda wall: wall.minute == 0,
    "*/15 * * * *": lambda wall: wall.minute % 15 == 0,
    "*/20 * * * *": lambda wall: wall.minute % 20 == 0,
    "0 */30 * * * *": lambda wall: wall.minute % 30 == 0,  # seconds: at second 0
}
# The shortest time between two wall times each matches, away from a change.
SPACING = {
    "* * * * *": timedelta(minutes=1),
    "0 * * * *": timedelta(hours=1),
    "*/15 * * * *": timedelta(minutes=15),
    "*/20 * * * *": timedelta(minutes=20),
    "0 */30 * * * *": timedelta(minutes=30),
}
FIXED_TIME: dict[str, Matches] = {
    "30 2 * * *": lambda wall: (wall.hour, wall.minute) == (2, 30),
    "30 1 * * *": lambda wall: (wall.hour, wall.minute) == (1, 30),
    "15 2 * * *": lambda wall: (wall.hour, wall.minute) == (2, 15),
    "45 1 * * *": lambda wall: (wall.hour, wall.minute) == (1, 45),
    "0 */2 * * *": lambda wall: wall.minute == 0 and wall.hour % 2 == 0,
    "*/15 1 * * *": lambda wall: wall.hour == 1 and wall.minute % 15 == 0,
    "*/10 2 * * *": lambda wall: wall.hour == 2 and wall.minute % 10 == 0,
}
# The daily ones: each local day has exactly one run.
DAILY = ("30 2 * * *", "30 1 * * *", "15 2 * * *", "45 1 * * *")
# Hour fields that name every hour: the same schedule as `0 * * * *`.
EVERY_HOUR = (
    "0 0-23 * * *",
    "0 */1 * * *",
    "0 " + ",".join(str(hour) for hour in range(24)) + " * * *",
    "@hourly",
)


@cache
def runs(expression: str, zone: str, start: datetime, end: datetime) -> tuple[datetime, ...]:
    """The runs in (start, end]."""
    cron = parse_cron(expression, ZoneInfo(zone), hash_key="ns/task")
    return tuple(takewhile(lambda time: time <= end, cron.times(start)))


def around(expression: str, change: Change) -> tuple[datetime, ...]:
    return runs(expression, change.zone, change.start, change.end)


def minutes(start: datetime, end: datetime) -> list[datetime]:
    """Every whole minute in [start, end)."""
    time = start.replace(second=0, microsecond=0)
    if time < start:
        time += MINUTE
    found = []
    while time < end:
        found.append(time)
        time += MINUTE
    return found


def wall(change: Change, instant: datetime) -> datetime:
    return _naive(instant.astimezone(ZoneInfo(change.zone)))


def first_instant(change: Change, wall_time: datetime) -> datetime:
    """When a wall time first occurs; for one in the gap of `change`, the gap's end."""
    zone = ZoneInfo(change.zone)
    instant = wall_time.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall(change, instant) == wall_time:
        return instant  # fold=0: the first of two occurrences
    assert change.forward
    assert change.walls[0] <= wall_time < change.walls[1]
    return change.at


def expected_interval_style(matches: Matches, change: Change) -> list[datetime]:
    """Every instant whose wall time matches, and the end of the gap if a wall time in
    it matches."""
    second = timedelta(seconds=1)
    instants = minutes(change.start + second, change.end + second)  # (start, end]
    times = {t for t in instants if matches(wall(change, t))}
    if change.forward and any(matches(w) for w in minutes(*change.walls)):
        times.add(change.at)
    return sorted(times)


def expected_fixed_time(matches: Matches, change: Change) -> list[datetime]:
    """The first instant of every wall time that matches."""
    walls = minutes(wall(change, change.start) - AROUND, wall(change, change.end) + AROUND)
    times = {first_instant(change, w) for w in walls if matches(w)}
    return sorted(t for t in times if change.start < t <= change.end)


# -- the changes the tests cover ----------------------------------------------------


def test_each_zone_springs_forward_and_falls_back_once_a_year() -> None:
    shifts = {
        "Europe/Berlin": timedelta(hours=1),
        "America/New_York": timedelta(hours=1),
        "Australia/Lord_Howe": timedelta(minutes=30),
    }
    for zone in ZONES:
        for year in YEARS:
            found = changes_in(zone, year)
            assert sorted(change.forward for change in found) == [False, True], (zone, year)
            for change in found:
                assert abs(change.after - change.before) == shifts[zone]
                assert (change.at.second, change.at.microsecond) == (0, 0)
                # Southern summer: Lord Howe falls back in April, springs forward in October.
                southern = zone == "Australia/Lord_Howe"
                assert change.forward == ((change.at.month > 6) == southern)
    berlin = [str(change) for change in CHANGES if change.at.year == 2027][:2]
    assert berlin == ["Europe/Berlin-2027-03-28-forward", "Europe/Berlin-2027-10-31-back"]


# -- every expression ---------------------------------------------------------------


@each(CHANGES)
def test_no_instant_runs_twice_and_runs_strictly_increase(change: Change) -> None:
    for expression in [*INTERVAL_STYLE, *FIXED_TIME, *EVERY_HOUR]:
        times = around(expression, change)
        assert all(a < b for a, b in pairwise(times)), expression
        assert all(time.microsecond == 0 and time.tzinfo is UTC for time in times)


@each(CHANGES)
def test_the_next_run_after_any_instant_is_the_next_of_the_sequence(change: Change) -> None:
    # Starting anywhere (inside either pass, at the change, between two runs) continues
    # the same sequence: the schedule has no memory but the instant it starts from.
    second = timedelta(seconds=1)
    for expression in ["0 * * * *", "*/20 * * * *", "30 1 * * *", "*/10 2 * * *"]:
        times = around(expression, change)
        cron = parse_cron(expression, ZoneInfo(change.zone), hash_key="ns/task")
        starts = {
            change.at + k * timedelta(minutes=10) + d
            for k in range(-9, 10)
            for d in (-second, timedelta())
        }
        starts |= {a + (b - a) / 2 for a, b in pairwise(times)}
        for start in sorted(starts):
            following = [time for time in times if time > start]
            if following:
                assert next(cron.times(start)) == following[0], (expression, start)


# -- interval-style -----------------------------------------------------------------


@each(CHANGES)
def test_interval_style_runs_at_every_instant_whose_wall_time_matches(change: Change) -> None:
    for expression, matches in INTERVAL_STYLE.items():
        assert parse_cron(expression, ZoneInfo(change.zone), "ns/task").interval_style
        assert list(around(expression, change)) == expected_interval_style(matches, change), (
            expression
        )


def windows(change: Change, length: timedelta) -> list[tuple[datetime, datetime]]:
    """The UTC windows [t, t + length) aligned to `length` that lie in (start, end]."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + ((change.start - epoch) // length + 1) * length
    found = []
    while first + length <= change.end:
        found.append((first, first + length))
        first += length
    return found


@each(CHANGES)
def test_hourly_runs_once_in_every_real_hour(change: Change) -> None:
    # Berlin and New York shift whole hours: wall :00 stays UTC :00. Lord Howe's
    # 30 minutes move wall :00 between UTC :00 and UTC :30: still one run an hour.
    for expression in ["0 * * * *", *EVERY_HOUR]:
        times = around(expression, change)
        for low, high in windows(change, timedelta(hours=1)):
            assert sum(low <= time < high for time in times) == 1, (expression, low)


@each(CHANGES)
def test_every_15_minutes_runs_once_in_every_real_quarter_hour(change: Change) -> None:
    # A shift of 30 or 60 minutes keeps the quarter hours of the wall clock on the UTC ones.
    times = around("*/15 * * * *", change)
    for low, high in windows(change, timedelta(minutes=15)):
        assert sum(low <= time < high for time in times) == 1, low


@each(FALL)
def test_fall_back_runs_the_repeated_wall_times_in_both_passes(change: Change) -> None:
    zone = ZoneInfo(change.zone)
    start, end = change.walls
    for expression, matches in INTERVAL_STYLE.items():
        repeated = [w for w in minutes(start, end) if matches(w)]
        in_repeat = [t for t in around(expression, change) if start <= wall(change, t) < end]
        # Each matching wall time twice: first under the old offset, then under the new.
        assert len(in_repeat) == 2 * len(repeated), expression
        assert [wall(change, t) for t in in_repeat] == repeated + repeated
        assert [offset(zone, t) for t in in_repeat] == [change.before] * len(repeated) + [
            change.after
        ] * len(repeated)
    # Not vacuous: every repeat holds quarter hours (Lord Howe repeats 01:30 to 02:00,
    # which holds no :00, so `0 * * * *` runs there in neither pass).
    assert any(INTERVAL_STYLE["*/15 * * * *"](w) for w in minutes(start, end))


@each(SPRING)
def test_spring_forward_gives_the_gap_one_run_at_its_end_without_a_burst(change: Change) -> None:
    start, end = change.walls
    for expression, matches in INTERVAL_STYLE.items():
        times = around(expression, change)
        skipped = [w for w in minutes(start, end) if matches(w)]
        # However many wall times of the gap match: one run, at its end (which is also
        # the run of the wall time at the end, when that one matches).
        assert skipped
        assert times.count(change.at) == 1, expression
        # No burst: the run after it is the next wall time that matches after the gap,
        # as far after the gap's end as on the wall clock (Lord Howe, `0 * * * *`:
        # 02:30, then 03:00, 30 minutes: less than the spacing, the only such pair;
        # see the next test).
        following = times[times.index(change.at) + 1]
        assert following - change.at == wall(change, following) - end, expression
        assert not matches(end) or following - change.at == SPACING[expression], expression


@each(CHANGES)
def test_interval_style_runs_never_come_closer_than_their_spacing_but_after_a_gap(
    change: Change,
) -> None:
    for expression in INTERVAL_STYLE:
        times = around(expression, change)
        for a, b in pairwise(times):
            assert b - a >= SPACING[expression] or (change.forward and a == change.at), (
                expression,
                a,
            )


def test_lord_howe_hourly_at_its_30_minute_spring_forward() -> None:
    change = next(c for c in SPRING if c.zone == "Australia/Lord_Howe" and c.at.year == 2027)
    assert change.at == datetime(2027, 10, 2, 15, 30, tzinfo=UTC)  # 02:00 +10:30 -> 02:30 +11
    times = around("0 * * * *", change)
    i = times.index(change.at)
    assert times[i - 1 : i + 2] == (
        datetime(2027, 10, 2, 14, 30, tzinfo=UTC),  # 01:00 +10:30
        datetime(2027, 10, 2, 15, 30, tzinfo=UTC),  # 02:00 skipped: 02:30 +11
        datetime(2027, 10, 2, 16, 0, tzinfo=UTC),  # 03:00 +11
    )


# -- fixed-time ---------------------------------------------------------------------


@each(CHANGES)
def test_fixed_time_runs_each_wall_time_once_at_its_first_instant(change: Change) -> None:
    for expression, matches in FIXED_TIME.items():
        assert not parse_cron(expression, ZoneInfo(change.zone), "ns/task").interval_style
        assert list(around(expression, change)) == expected_fixed_time(matches, change), expression


@each(CHANGES)
def test_daily_fixed_time_runs_once_each_local_day_around_the_change(change: Change) -> None:
    zone = ZoneInfo(change.zone)
    days = [change.local_day + timedelta(days=d) for d in (-1, 0, 1)]
    for expression in DAILY:
        times = runs(
            expression, change.zone, change.at - timedelta(days=3), change.at + timedelta(days=3)
        )
        per_day = Counter(time.astimezone(zone).date() for time in times)
        assert [per_day[day] for day in days] == [1, 1, 1], expression


def test_a_daily_time_in_each_kind_of_change_on_lord_howe() -> None:
    def daily(expression: str, change: Change) -> datetime:
        times = runs(
            expression,
            change.zone,
            change.at - timedelta(hours=12),
            change.at + timedelta(hours=12),
        )
        (time,) = [
            t for t in times if t.astimezone(ZoneInfo(change.zone)).date() == change.local_day
        ]
        return time

    fall, spring = [c for c in CHANGES if c.zone == "Australia/Lord_Howe" and c.at.year == 2027]
    # 2027-04-04: 02:00 +11 -> 01:30 +10:30. 01:45 occurs twice: the first runs.
    assert daily("45 1 * * *", fall) == datetime(2027, 4, 3, 14, 45, tzinfo=UTC)
    assert daily("15 2 * * *", fall) == datetime(2027, 4, 3, 15, 45, tzinfo=UTC)
    # 2027-10-03: 02:00 +10:30 -> 02:30 +11. 02:15 does not exist: it runs at 02:30.
    assert daily("15 2 * * *", spring) == datetime(2027, 10, 2, 15, 30, tzinfo=UTC)
    assert daily("45 1 * * *", spring) == datetime(2027, 10, 2, 15, 15, tzinfo=UTC)


# -- which hour fields are which ---------------------------------------------------


def test_a_step_over_the_hours_is_fixed_time() -> None:
    # `*/2` names the hours 0, 2, 4...: the same as listing them. In Berlin 02:00
    # repeats on 31 October 2027 (03:00 CEST -> 02:00 CET): it runs once, as CEST.
    berlin = ZoneInfo("Europe/Berlin")
    assert not parse_cron("0 */2 * * *", berlin, "ns/task").interval_style
    change = next(c for c in FALL if c.zone == "Europe/Berlin" and c.at.year == 2027)
    times = around("0 */2 * * *", change)
    assert [
        t
        for t in times
        if datetime(2027, 10, 30, 21, tzinfo=UTC) < t < datetime(2027, 10, 31, 4, tzinfo=UTC)
    ] == [
        datetime(2027, 10, 30, 22, tzinfo=UTC),  # 00:00 CEST
        datetime(2027, 10, 31, 0, tzinfo=UTC),  # 02:00 CEST; not 02:00 CET, an hour later
        datetime(2027, 10, 31, 3, tzinfo=UTC),  # 04:00 CET
    ]
    listed = "0 " + ",".join(str(hour) for hour in range(0, 24, 2)) + " * * *"
    for other in CHANGES:
        assert around(listed, other) == around("0 */2 * * *", other), other


@pytest.mark.parametrize(
    ("expression", "interval_style"),
    [
        ("0 */30 * * * *", True),
        ("0 0 0-23 * * *", True),
        ("0 0 * 31 * *", True),  # every hour of the 31st
        ("0 30 2 * * *", False),
        ("0 0 */2 * * *", False),
        ("0 0 1-3 * * *", False),
    ],
)
def test_the_hour_field_of_a_seconds_expression_decides_its_style(
    expression: str, interval_style: bool
) -> None:
    # Six fields: seconds, minute, hour, ... The hour field is the third.
    cron = parse_cron(expression, ZoneInfo("Europe/Berlin"), "ns/task")
    assert cron.interval_style is interval_style


# A six-field expression and the five-field one it extends with second 0.
WITH_SECONDS = {
    "0 30 2 * * *": "30 2 * * *",
    "0 0 */2 * * *": "0 */2 * * *",
    "0 0 * * * *": "0 * * * *",
    "0 */15 * * * *": "*/15 * * * *",
    "0 0 * 31 * *": "0 * 31 * *",
}


@each(CHANGES)
def test_a_seconds_expression_runs_as_its_five_field_form(change: Change) -> None:
    for six, five in WITH_SECONDS.items():
        assert around(six, change) == around(five, change), six


@each(CHANGES)
def test_hour_fields_that_cover_every_hour_are_interval_style(change: Change) -> None:
    hourly = around("0 * * * *", change)
    for expression in EVERY_HOUR:
        assert parse_cron(expression, ZoneInfo(change.zone), "ns/task").interval_style
        assert around(expression, change) == hourly, expression
