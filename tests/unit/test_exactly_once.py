"""Exactly once, for real: each defect an independent simulation found in the core,
as the smallest reproduction (T = task ns/task, created at C = 2026-05-01T12:00Z)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from taskmaster.core.decide import Plan, TaskState, decide
from taskmaster.core.names import Run, TaskRef, Trigger, job_name
from taskmaster.core.schedule import RunAt, ScheduleError, parse_cron, parse_duration
from taskmaster.core.spec import InvalidSpec, parse_spec
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    Result,
    parse_time,
    read_history,
    reduce_status,
)
from taskmaster.core.times import rfc3339

C = datetime(2026, 5, 1, 12, tzinfo=UTC)
TASK = TaskRef("ns", "task", "uid")
CONTAINER = {"task": {"container": {"image": "busybox"}}}


def at(seconds: float) -> datetime:
    return C + timedelta(seconds=seconds)


def state(spec: dict[str, Any], **fields: Any) -> TaskState:
    parsed = parse_spec({**CONTAINER, **spec}, namespace="ns", name="task", created=C)
    return TaskState(
        **{"task": TASK, "spec": parsed, "jobs": (), "last_schedule_time": None, "since": C}
        | fields
    )


def job(scheduled: datetime, attempt: int = 1, result: Result | None = None, **kw: Any) -> JobView:
    run = Run(scheduled, attempt, Trigger.SCHEDULE if attempt == 1 else Trigger.RETRY)
    return JobView(name=job_name("task", run), run=run, result=result, **kw)


def missed(plan: Plan) -> int:
    return sum(r.runs for r in plan.records if r.result is Result.MISSED)


def test_1_a_fractional_time_is_decided_once_across_status_round_trips() -> None:
    spec = {"runAt": "2026-05-01T12:00:03.5Z", "concurrencyPolicy": "Replace"}

    first = decide(state(spec), at(10))
    # Whole seconds, never early: what the status and the Job's labels can hold.
    assert first.create == [Run(at(4))]
    cursor = parse_time(rfc3339(first.last_schedule_time or C))
    again = decide(state(spec, last_schedule_time=cursor, jobs=(job(at(4)),)), at(20))

    assert (again.create, again.delete, again.records) == ([], [], [])


def test_1_an_interval_of_a_fraction_of_a_second_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.every: '1\.5s' is not a whole number of seconds"):
        state({"every": "1.5s"})


def test_2_a_late_decision_follows_missed_run_policy() -> None:
    base = {"every": "1s", "startingDeadlineSeconds": 300}
    # The operator was up all along; this task's decision came 5 minutes late.
    late = {"last_schedule_time": at(0)}

    latest = decide(state({**base, "missedRunPolicy": "RunLatest"}, **late), at(300.5))
    skip = decide(state({**base, "missedRunPolicy": "Skip"}, **late), at(300.5))

    assert len(latest.create) <= 12
    assert [r.trigger for r in latest.create].count(Trigger.CATCH_UP) == 1
    assert all(r.trigger is Trigger.SCHEDULE for r in skip.create)
    assert len(skip.create) <= 11
    assert missed(latest) + len(latest.create) == missed(skip) + len(skip.create) == 300


def test_3_a_run_that_ran_is_not_recorded_missed() -> None:
    # The status write of 12:04's run was lost before a crash: the cursor says 12:03.
    done = job(at(240), result=Result.SUCCEEDED, completion_time=at(250))

    plan = decide(
        state({"every": "1m"}, jobs=(done,), last_schedule_time=at(180), since=at(390)),
        at(390),
    )

    assert missed(plan) == 1
    assert [r.scheduled_time for r in plan.records] == [at(300)]
    assert plan.create == [Run(at(360), trigger=Trigger.CATCH_UP)]


def test_4_retries_obey_the_concurrency_policy() -> None:
    retrying = {"every": "1m", "retry": {"limit": 1, "backoff": {"initialSeconds": 30}}}
    failed = job(at(60), result=Result.FAILED, completion_time=at(70))
    active = job(at(120))

    for policy in ("Forbid", "Replace"):
        plan = decide(
            state(
                {**retrying, "concurrencyPolicy": policy},
                jobs=(failed, active),
                last_schedule_time=at(120),
            ),
            at(125),
        )
        assert plan.create == [], policy
        assert plan.delete == [], policy


def test_5_a_pending_retry_is_kept_in_the_history_until_it_runs() -> None:
    retrying = {"retry": {"limit": 2, "backoff": {"initialSeconds": 900}}}
    failed = job(at(60), result=Result.FAILED, completion_time=at(70))
    newer = [
        job(at(60 * k), result=Result.SUCCEEDED, completion_time=at(60 * k + 5)) for k in (2, 3)
    ]
    for limit in (0, 2):
        spec = {"every": "1m", "historyLimit": limit, **retrying}
        observed = Observation(state(spec).spec, [failed, *newer], at(300), 1)

        history = read_history(reduce_status({}, observed).status)

        assert failed.name in [entry.job_name for entry in history], limit
        # With the failed Job gone, the entry is the retry's record.
        plan = decide(state(spec, last_schedule_time=at(960), history=history), at(970))
        assert Run(at(60), 2, Trigger.RETRY) in plan.create, limit


def test_6_jitter_larger_than_the_interval_loses_no_run() -> None:
    spec = {"every": "10s", "jitterSeconds": 30, "startingDeadlineSeconds": 5}
    now, cursor, jobs = at(0), None, ()
    started: list[datetime] = []
    lost = 0
    for _ in range(1000):
        plan = decide(state(spec, last_schedule_time=cursor, jobs=jobs), now)
        started += [run.scheduled for run in plan.create]
        lost += missed(plan)
        cursor = plan.last_schedule_time
        jobs = tuple(job(run.scheduled) for run in plan.create)
        assert plan.wake_at is not None
        now = max(now, plan.wake_at)
        if now > at(1800):
            break

    assert lost == 0
    assert started == [at(10 * k) for k in range(1, len(started) + 1)]
    assert len(started) >= 175


def test_7_a_task_resumed_while_the_operator_was_down_catches_up() -> None:
    spec = {"every": "1m", "startingDeadlineSeconds": 300}
    resumed = state(
        spec,
        last_schedule_time=at(600),
        was_suspended=True,
        spec_changed_at=at(1200),
        since=at(1800.5),
    )

    plan = decide(resumed, at(1800.5))

    assert plan.create == [Run(at(1800), trigger=Trigger.CATCH_UP)]
    # 12:21 to 12:25 too late to start, 12:26 to 12:29 not caught up by RunLatest.
    assert missed(plan) == 9


def test_9_a_run_now_token_used_again_does_not_run_again() -> None:
    first_a = Run(at(5), trigger=Trigger.MANUAL, token="A")
    history = [
        HistoryEntry(
            at(5), Result.SUCCEEDED, job_name=job_name("task", first_a), trigger=Trigger.MANUAL
        )
    ]

    plan = decide(
        replace(
            state({"every": "1h"}, run_now_token="A", handled_run_now_token="B"), history=history
        ),
        at(60),
    )

    assert plan.create == []
    assert plan.run_now_token == "A"


def fires(expression: str, count: int, after: datetime = C, key: str = "ns/task") -> list[datetime]:
    times = parse_cron(expression, ZoneInfo("UTC"), key).times(after)
    return [next(times) for _ in range(count)]


def test_8_a_range_with_equal_ends_is_that_one_value() -> None:
    # C is a Friday.
    assert fires("0 9 * * MON-MON", 2) == [
        datetime(2026, 5, 4, 9, tzinfo=UTC),
        datetime(2026, 5, 11, 9, tzinfo=UTC),
    ]
    assert fires("5-5 * * * *", 2) == [at(300), at(3900)]


def test_8_random_fields_are_refused_naming_the_field() -> None:
    with pytest.raises(ScheduleError, match="the minute field 'R' uses R"):
        parse_cron("R 0 * * *", ZoneInfo("UTC"), "ns/task")


def test_8_a_hashed_day_of_the_month_is_one_every_month_has() -> None:
    days = {parse_cron("0 0 H * *", ZoneInfo("UTC"), f"ns/t{i}").parts for i in range(300)}
    chosen = {int(parts[0].split()[2]) for parts in days}
    assert min(chosen) == 1
    assert max(chosen) == 28
    # Valid for every name, in February too.
    for i in range(300):
        assert len(fires("0 0 H 2 *", 2, key=f"ns/t{i}")) == 2


def test_8_nth_weekday_and_nearest_weekday_combine_with_the_other_day_field() -> None:
    # 1 July 2026 is a Wednesday: day 1 or the first Monday (6 July).
    assert fires("0 0 1 * MON#1", 2, datetime(2026, 6, 30, tzinfo=UTC)) == [
        datetime(2026, 7, 1, tzinfo=UTC),
        datetime(2026, 7, 6, tzinfo=UTC),
    ]
    # No day of February is nearest to a 31st: the next is 31 March (a Tuesday).
    assert fires("0 0 31W * *", 1, datetime(2026, 2, 1, tzinfo=UTC)) == [
        datetime(2026, 3, 31, tzinfo=UTC)
    ]


def test_9_nanoseconds_are_counted_exactly() -> None:
    assert parse_duration("1000000000ns") == timedelta(seconds=1)
    assert parse_duration("1h0.5m") == timedelta(hours=1, seconds=30)


def test_9_rfc3339_times_may_use_lower_case_separators() -> None:
    assert state({"runAt": "2026-05-01t12:00:05z"}).spec.timeline.schedule == RunAt(at(5))


def http(codes: str) -> dict[str, Any]:
    return {"every": "1m", "task": {"http": {"url": "http://x", "successCodes": codes}}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"runAt": "1969-12-31T23:59:59Z"}, "spec.runAt"),
        (http("abc"), "spec.task.http.successCodes"),
        (http("600"), "spec.task.http.successCodes"),
        (http("300-200"), "spec.task.http.successCodes"),
    ],
)
def test_9_times_before_the_epoch_and_bad_success_codes_are_refused(
    spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidSpec, match=field.replace(".", r"\.")):
        state(spec)


# Found by an independent review of the fixes above.


def test_a_jump_over_a_gap_still_starts_the_latest_due_run() -> None:
    spec = {"schedule": "* 9-16 * * *", "startingDeadlineSeconds": 86400}
    cursor, now = datetime(2026, 5, 2, 13, tzinfo=UTC), datetime(2026, 5, 2, 20, 30, tzinfo=UTC)

    plan = decide(state(spec, last_schedule_time=cursor, since=now), now)

    assert plan.create == [Run(datetime(2026, 5, 2, 16, 59, tzinfo=UTC), trigger=Trigger.CATCH_UP)]
    assert plan.last_schedule_time == datetime(2026, 5, 2, 16, 59, tzinfo=UTC)


def test_replace_deletes_an_older_run_left_active_by_a_lost_replacement() -> None:
    spec = {"every": "1m", "concurrencyPolicy": "Replace"}
    older, newer = job(at(60)), job(at(120))

    plan = decide(state(spec, jobs=(older, newer), last_schedule_time=at(120)), at(130))

    assert plan.create == []
    assert plan.delete == [older]
    assert [(r.result, r.job_name) for r in plan.records] == [(Result.REPLACED, older.name)]


def test_a_nearest_weekday_in_a_month_too_short_ends_with_the_calendar() -> None:
    # February never has a 31st: only the Mondays of February run.
    assert fires("0 0 31W 2 MON", 2, datetime(2027, 1, 1, tzinfo=UTC)) == [
        datetime(2027, 2, 1, tzinfo=UTC),
        datetime(2027, 2, 8, tzinfo=UTC),
    ]
    with pytest.raises(ScheduleError, match="can never fire"):
        parse_cron("0 0 31W 2 *", ZoneInfo("UTC"), "ns/task")


def test_failed_runs_kept_for_their_retry_are_bounded() -> None:
    retry = {"limit": 1, "backoff": {"initialSeconds": 86400}}
    spec = state({"every": "1m", "historyLimit": 0, "retry": retry}).spec
    failed = [
        job(at(t), result=Result.FAILED, completion_time=at(t + 5)) for t in range(60, 18060, 60)
    ]

    history = reduce_status({}, Observation(spec, failed, at(18100), 1)).status["history"]

    assert len(history) == 100
    assert history[0]["jobName"] == failed[-1].name  # the newest are kept


def test_run_latest_starts_nothing_older_when_the_latest_already_ran() -> None:
    # The status was lost with a failover; the latest time's Job exists.
    latest = job(at(60))

    plan = decide(state({"every": "10s"}, jobs=(latest,), since=at(61)), at(61))

    assert plan.create == []
    assert missed(plan) == 5
    assert plan.last_schedule_time == at(60)


def test_replace_does_not_start_a_run_older_than_the_active_one() -> None:
    spec = {"every": "10s", "concurrencyPolicy": "Replace", "missedRunPolicy": "RunAll"}
    newer = job(at(60))

    plan = decide(state(spec, jobs=(newer,), since=at(61)), at(61))

    assert plan.create == []
    assert plan.delete == []
    assert {r.result for r in plan.records} == {Result.REPLACED}
