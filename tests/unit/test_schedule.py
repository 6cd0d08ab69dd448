"""Schedule math: cron (5/6 fields, macros, H), intervals, one-time runs, zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from taskmaster.core.schedule import (
    Every,
    RunAt,
    ScheduleError,
    Timeline,
    jitter,
    parse_cron,
    parse_duration,
)

NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(expression: str, after: datetime, count: int, zone: str = "UTC") -> list[datetime]:
    cron = parse_cron(expression, ZoneInfo(zone), hash_key="ns/task")
    return list(islice(cron.times(after), count))


def test_five_fields_fire_on_the_minute() -> None:
    assert fires("*/15 * * * *", utc(2026, 5, 1, 10, 7, 30), 3) == [
        utc(2026, 5, 1, 10, 15),
        utc(2026, 5, 1, 10, 30),
        utc(2026, 5, 1, 10, 45),
    ]


def test_times_are_strictly_after_the_given_instant() -> None:
    assert fires("*/15 * * * *", utc(2026, 5, 1, 10, 15), 1) == [utc(2026, 5, 1, 10, 30)]


def test_iterators_of_one_schedule_are_independent() -> None:
    # They share the parsed expression; each keeps its own position, whatever
    # order they are advanced in, and one in a time zone does not leak into another.
    cron = parse_cron("0 30 2 * * *", NEW_YORK, hash_key="ns/task")
    early, late = cron.times(utc(2026, 3, 1)), cron.times(utc(2026, 3, 20))
    assert next(early) == utc(2026, 3, 1, 7, 30)
    assert next(late) == utc(2026, 3, 20, 6, 30)
    assert next(early) == utc(2026, 3, 2, 7, 30)
    assert next(late) == utc(2026, 3, 21, 6, 30)
    # The same again from scratch: nothing was consumed from a shared state.
    assert next(cron.times(utc(2026, 3, 1))) == utc(2026, 3, 1, 7, 30)


def test_tasks_with_the_same_expression_share_one_schedule_unless_hashed() -> None:
    # What lets a minute with thousands of `* * * * *` tasks do the cron math once.
    plain = [parse_cron("*/5 * * * *", NEW_YORK, hash_key=task) for task in ("ns/a", "ns/b")]
    hashed = [parse_cron("H/5 * * * *", NEW_YORK, hash_key=task) for task in ("ns/a", "ns/b")]
    assert plain[0] == plain[1]
    assert hashed[0] != hashed[1]
    after = utc(2026, 5, 1, 10, 7, 30)
    assert next(plain[0].times(after)) == next(plain[1].times(after)) == utc(2026, 5, 1, 10, 10)


def test_six_fields_lead_with_seconds() -> None:
    assert fires("*/20 * * * * *", utc(2026, 5, 1, 10, 0, 5), 4) == [
        utc(2026, 5, 1, 10, 0, 20),
        utc(2026, 5, 1, 10, 0, 40),
        utc(2026, 5, 1, 10, 1, 0),
        utc(2026, 5, 1, 10, 1, 20),
    ]


def test_six_fields_with_fixed_seconds() -> None:
    assert fires("30 0 12 * * *", utc(2026, 5, 1), 2) == [
        utc(2026, 5, 1, 12, 0, 30),
        utc(2026, 5, 2, 12, 0, 30),
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", utc(2026, 5, 1, 11)),
        ("@daily", utc(2026, 5, 2)),
        ("@midnight", utc(2026, 5, 2)),
        ("@weekly", utc(2026, 5, 3)),  # the next Sunday
        ("@monthly", utc(2026, 6, 1)),
        ("@yearly", utc(2027, 1, 1)),
        ("@annually", utc(2027, 1, 1)),
    ],
)
def test_macros(macro: str, expected: datetime) -> None:
    assert fires(macro, utc(2026, 5, 1, 10, 30), 1) == [expected]


def test_hashed_fields_are_stable_per_task_and_spread_across_tasks() -> None:
    start = utc(2026, 5, 1)

    def minute_of(task: str) -> int:
        cron = parse_cron("H * * * *", ZoneInfo("UTC"), hash_key=task)
        return next(cron.times(start)).minute

    assert minute_of("ns/a") == minute_of("ns/a")
    minutes = {minute_of(f"ns/task-{i}") for i in range(100)}
    assert len(minutes) > 30
    assert all(0 <= m < 60 for m in minutes)


def test_hashed_step_keeps_the_interval() -> None:
    times = fires("H/15 * * * *", utc(2026, 5, 1), 4)

    assert [b - a for a, b in pairwise(times)] == [timedelta(minutes=15)] * 3
    assert times[0].minute < 15


def test_zone_wall_clock() -> None:
    # 09:00 in New York is 13:00 UTC in summer and 14:00 UTC in winter.
    assert fires("0 9 * * *", utc(2026, 7, 1), 1, "America/New_York") == [utc(2026, 7, 1, 13)]
    assert fires("0 9 * * *", utc(2026, 12, 1), 1, "America/New_York") == [utc(2026, 12, 1, 14)]


def test_spring_forward_gap_fires_once_at_the_end_of_the_gap() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC): 02:30 does not exist.
    assert fires("30 2 * * *", utc(2026, 3, 7), 3, "America/New_York") == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # the first instant after the gap, 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_several_times_in_the_gap_fire_once() -> None:
    times = fires("*/15 2,3 * * *", utc(2026, 3, 8, 5), 5, "America/New_York")

    assert times == [
        utc(2026, 3, 8, 7, 0),  # 02:00..02:45 and 03:00 EDT are all this instant
        utc(2026, 3, 8, 7, 15),
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 8, 7, 45),
        utc(2026, 3, 9, 6, 0),  # 02:00 EDT the next day
    ]


def test_no_run_is_lost_at_spring_forward_hourly() -> None:
    times = fires("0 * * * *", utc(2026, 3, 8, 5), 3, "America/New_York")

    # 01:00 EST, then 02:00 (gap) and 03:00 EDT are one instant: 07:00 UTC.
    assert times == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_fall_back_repeated_times_fire_once_at_the_first_occurrence() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST (06:00 UTC): 01:xx happens twice.
    assert fires("*/30 1 * * *", utc(2026, 11, 1), 3, "America/New_York") == [
        utc(2026, 11, 1, 5, 0),  # 01:00 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; not again at 01:00 and 01:30 EST
        utc(2026, 11, 2, 6, 0),  # 01:00 EST the next day
    ]


def test_fall_back_hourly_runs_every_real_hour() -> None:
    # The hour field is `*`: interval-style, it follows elapsed time.
    assert fires("0 * * * *", utc(2026, 11, 1, 3, 30), 4, "America/New_York") == [
        utc(2026, 11, 1, 4),  # 00:00 EDT
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST, the second pass: an hour later
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]


def test_starting_inside_the_repeated_hour_interval_style_runs_its_second_pass() -> None:
    # 06:10 UTC is 01:10 EST, the second pass of 01:10.
    assert fires("*/30 * * * *", utc(2026, 11, 1, 6, 10), 2, "America/New_York") == [
        utc(2026, 11, 1, 6, 30),  # 01:30 EST
        utc(2026, 11, 1, 7, 0),  # 02:00 EST
    ]


def test_starting_inside_the_repeated_hour_fixed_time_skips_its_repeats() -> None:
    # 01:30 already fired as EDT; the hour field names hour 1 only: fixed-time.
    assert fires("*/30 1 * * *", utc(2026, 11, 1, 6, 10), 1, "America/New_York") == [
        utc(2026, 11, 2, 6, 0)  # 01:00 EST the next day
    ]


def test_seconds_schedule_across_the_gap() -> None:
    times = fires("0 */30 * * * *", utc(2026, 3, 8, 6, 45), 3, "America/New_York")

    assert times == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 8, 0)]


def test_half_hour_dst_shift() -> None:
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 local on
    # 2026-10-04 (15:30 UTC the day before).
    assert fires("15 2 * * *", utc(2026, 10, 3, 12), 1, "Australia/Lord_Howe") == [
        utc(2026, 10, 3, 15, 30)
    ]


def test_europe_transitions() -> None:
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    assert fires("30 2 * * *", utc(2026, 3, 28, 12), 2, "Europe/Berlin") == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]
    assert fires("30 2 * * *", utc(2026, 10, 24, 12), 2, "Europe/Berlin") == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, not again at 02:30 CET
        utc(2026, 10, 26, 1, 30),
    ]


def test_rare_but_possible_dates_are_valid() -> None:
    assert fires("0 0 29 2 *", utc(2026, 1, 1), 1) == [utc(2028, 2, 29)]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 0 30 2 *", "can never fire"),
        ("0 0 31 4,6,9,11 *", "can never fire"),
        ("61 * * * *", "not a valid cron expression"),
        ("* * * *", "has 4 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("@fortnightly", "unknown macro"),
        ("0 0 * * MON-XYZ", "not a valid cron expression"),
        ("", "has 0 fields"),
    ],
)
def test_invalid_cron(expression: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        parse_cron(expression, ZoneInfo("UTC"), hash_key="ns/task")


def test_every_counts_from_its_anchor() -> None:
    every = Every(timedelta(seconds=10), anchor=utc(2026, 5, 1, 10, 0, 3))

    assert list(islice(every.times(utc(2026, 5, 1, 10, 0, 25)), 2)) == [
        utc(2026, 5, 1, 10, 0, 33),
        utc(2026, 5, 1, 10, 0, 43),
    ]
    assert next(every.times(utc(2026, 5, 1))) == utc(2026, 5, 1, 10, 0, 3)
    assert next(every.times(utc(2026, 5, 1, 10, 0, 3))) == utc(2026, 5, 1, 10, 0, 13)


def test_run_at_fires_once() -> None:
    run_at = RunAt(utc(2026, 5, 1, 12))

    assert list(run_at.times(utc(2026, 5, 1))) == [utc(2026, 5, 1, 12)]
    assert list(run_at.times(utc(2026, 5, 1, 12))) == []


def test_timeline_counts_from_creation_exclusive() -> None:
    timeline = Timeline(
        Every(timedelta(seconds=5), anchor=utc(2026, 5, 1)), created=utc(2026, 5, 1)
    )

    assert timeline.next() == utc(2026, 5, 1, 0, 0, 5)
    cron = Timeline(parse_cron("* * * * *", ZoneInfo("UTC"), "k"), created=utc(2026, 5, 1, 0, 1))
    assert cron.next() == utc(2026, 5, 1, 0, 2)


def test_timeline_window_start_is_inclusive_and_end_inclusive() -> None:
    timeline = Timeline(
        parse_cron("0 * * * *", ZoneInfo("UTC"), "k"),
        created=utc(2026, 5, 1),
        start_at=utc(2026, 5, 1, 3),
        end_at=utc(2026, 5, 1, 5),
    )

    assert list(timeline.times()) == [utc(2026, 5, 1, 3), utc(2026, 5, 1, 4), utc(2026, 5, 1, 5)]
    assert timeline.last == utc(2026, 5, 1, 5)


def test_timeline_start_before_creation_never_backfills() -> None:
    timeline = Timeline(
        parse_cron("0 * * * *", ZoneInfo("UTC"), "k"),
        created=utc(2026, 5, 1, 10, 30),
        start_at=utc(2026, 4, 1),
    )

    assert timeline.next() == utc(2026, 5, 1, 11)


def test_timeline_max_runs() -> None:
    timeline = Timeline(
        Every(timedelta(minutes=1), anchor=utc(2026, 5, 1)), created=utc(2026, 5, 1), max_runs=3
    )

    assert list(timeline.times()) == [utc(2026, 5, 1, 0, m) for m in (1, 2, 3)]
    assert timeline.last == utc(2026, 5, 1, 0, 3)
    assert timeline.next(utc(2026, 5, 1, 0, 3)) is None


def test_timeline_max_runs_beyond_the_window_ends_with_the_window() -> None:
    timeline = Timeline(
        Every(timedelta(minutes=1), anchor=utc(2026, 5, 1)),
        created=utc(2026, 5, 1),
        end_at=utc(2026, 5, 1, 0, 2, 30),
        max_runs=10,
    )

    assert list(timeline.times()) == [utc(2026, 5, 1, 0, 1), utc(2026, 5, 1, 0, 2)]


def test_timeline_times_come_strictly_after_the_cursor() -> None:
    timeline = Timeline(
        Every(timedelta(seconds=2), anchor=utc(2026, 5, 1)), created=utc(2026, 5, 1)
    )

    assert list(islice(timeline.times(utc(2026, 5, 1, 0, 0, 3)), 3)) == [
        utc(2026, 5, 1, 0, 0, 4),
        utc(2026, 5, 1, 0, 0, 6),
        utc(2026, 5, 1, 0, 0, 8),
    ]
    assert next(timeline.times(utc(2026, 5, 1, 0, 0, 4))) == utc(2026, 5, 1, 0, 0, 6)


def test_timeline_run_at_before_creation_is_still_due() -> None:
    timeline = Timeline(RunAt(utc(2026, 5, 1, 9)), created=utc(2026, 5, 1, 10))

    assert timeline.next() == utc(2026, 5, 1, 9)
    assert timeline.last == utc(2026, 5, 1, 9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m30s", timedelta(seconds=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "abc", "5 m", "-5s", "1d", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ScheduleError, match="is not a duration"):
        parse_duration(text)


def test_jitter_is_deterministic_and_bounded() -> None:
    scheduled = utc(2026, 5, 1, 12)

    delays = {jitter(f"ns/task-{i}", scheduled, 30) for i in range(200)}

    assert jitter("ns/a", scheduled, 30) == jitter("ns/a", scheduled, 30)
    assert min(delays) >= timedelta(0)
    assert max(delays) <= timedelta(seconds=30)
    assert len(delays) > 20
    assert jitter("ns/a", scheduled, 0) == timedelta(0)


def test_last_until_finds_the_latest_time_without_scanning_from_the_start() -> None:
    seconds = Timeline(parse_cron("* * * * * *", ZoneInfo("UTC"), "k"), created=utc(2000, 1, 1))
    yearly = Timeline(parse_cron("@yearly", ZoneInfo("UTC"), "k"), created=utc(2000, 1, 1))
    once = Timeline(RunAt(utc(2026, 5, 1)), created=utc(2026, 1, 1))

    assert seconds.last_until(utc(2026, 5, 1, 12, 0, 0, 500)) == utc(2026, 5, 1, 12)
    assert yearly.last_until(utc(2026, 5, 1)) == utc(2026, 1, 1)
    assert once.last_until(utc(2026, 4, 1)) is None
    assert once.last_until(utc(2026, 6, 1)) == utc(2026, 5, 1)


def test_an_interval_style_rare_day_is_found_across_many_offset_changes() -> None:
    # The fifth Thursday of February: 2052 first, with some 50 changes of Gaza's offset
    # before it.
    times = fires("0 * ? 2 THU#5", utc(2026, 5, 1), 1, "Asia/Gaza")

    assert times == [utc(2052, 2, 28, 22)]


def test_nearest_weekday_of_a_day_no_month_of_the_schedule_has_is_refused_quickly() -> None:
    # Every second of April 30th was once walked, one by one, for 30 years.
    with pytest.raises(ScheduleError, match="can never fire"):
        parse_cron("* * * 31W 4 *", ZoneInfo("UTC"), hash_key="ns/task")
