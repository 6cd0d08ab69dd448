"""The decision function: what to do for a task at a given instant."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmaster.core.decide import MAX_RUNS_PER_DECISION, Plan, TaskState, decide
from taskmaster.core.names import Run, TaskRef, Trigger
from taskmaster.core.schedule import WALK_STEPS
from taskmaster.core.spec import parse_spec
from taskmaster.core.status import HistoryEntry, JobView, Result

CREATED = datetime(2026, 5, 1, 12, tzinfo=UTC)
TASK = TaskRef("ns", "task", "uid")
CONTAINER = {"task": {"container": {"image": "busybox"}}}


def at(seconds: float) -> datetime:
    return CREATED + timedelta(seconds=seconds)


def state(
    spec: dict[str, Any],
    *,
    cursor: datetime | None = None,
    jobs: tuple[JobView, ...] = (),
    since: datetime = CREATED,
    token: str | None = None,
    handled: str | None = None,
) -> TaskState:
    return TaskState(
        task=TASK,
        spec=parse_spec({**CONTAINER, **spec}, namespace="ns", name="task", created=CREATED),
        jobs=jobs,
        last_schedule_time=cursor,
        since=since,
        run_now_token=token,
        handled_run_now_token=handled,
    )


def running(scheduled: datetime, name: str = "task-x") -> JobView:
    return JobView(name=name, run=Run(scheduled))


def scheduled_runs(plan: Plan) -> list[tuple[datetime, Trigger]]:
    return [(run.scheduled, run.trigger) for run in plan.create]


def test_nothing_is_due_before_the_first_time() -> None:
    plan = decide(state({"every": "2s"}), at(1.5))

    assert plan.create == []
    assert plan.next_run_time == at(2)
    assert plan.wake_at == at(2)
    assert plan.last_schedule_time is None


def test_a_due_time_creates_its_run_and_advances_the_cursor() -> None:
    plan = decide(state({"every": "2s"}), at(2.1))

    assert scheduled_runs(plan) == [(at(2), Trigger.SCHEDULE)]
    assert plan.last_schedule_time == at(2)
    assert plan.next_run_time == at(4)
    assert plan.records == []


def test_a_run_whose_job_exists_is_not_created_again() -> None:
    plan = decide(state({"every": "2s"}, jobs=(running(at(2)),)), at(2.1))

    assert plan.create == []
    assert plan.last_schedule_time == at(2)


def test_a_time_past_the_starting_deadline_is_missed() -> None:
    plan = decide(state({"every": "1m", "startingDeadlineSeconds": 10}), at(75))

    assert plan.create == []
    (missed,) = plan.records
    assert missed.result is Result.MISSED
    assert missed.scheduled_time == at(60)
    assert missed.reason == "MissedStartingDeadline"
    assert "startingDeadlineSeconds (10s)" in missed.message
    assert plan.last_schedule_time == at(60)
    assert plan.next_run_time == at(120)


def downtime_state(policy: str) -> TaskState:
    # Every minute; the operator was away from 12:00 until just after 12:10 and
    # may start runs up to 5 minutes late.
    return state(
        {"every": "1m", "startingDeadlineSeconds": 300, "missedRunPolicy": policy},
        since=at(600.5),
    )


def test_run_latest_runs_one_catch_up_and_records_the_rest() -> None:
    plan = decide(downtime_state("RunLatest"), at(600.5))

    assert scheduled_runs(plan) == [(at(600), Trigger.CATCH_UP)]
    late, skipped = plan.records
    # 12:01..12:05 are more than 300 s late at 12:10:00.5; 12:06..12:09 are not.
    assert (late.reason, late.runs, late.scheduled_time) == ("MissedStartingDeadline", 5, at(300))
    assert (skipped.reason, skipped.runs, skipped.scheduled_time) == ("MissedRunPolicy", 4, at(540))
    assert plan.last_schedule_time == at(600)


def test_run_all_runs_every_time_inside_the_deadline_oldest_first() -> None:
    plan = decide(downtime_state("RunAll"), at(600.5))

    assert scheduled_runs(plan) == [(at(s), Trigger.CATCH_UP) for s in range(360, 660, 60)]
    (late,) = plan.records
    assert late.runs == 5


def test_skip_runs_nothing_missed() -> None:
    plan = decide(downtime_state("Skip"), at(600.5))

    assert plan.create == []
    assert sum(r.runs for r in plan.records) == 10
    assert plan.last_schedule_time == at(600)
    assert plan.next_run_time == at(660)


def test_times_due_after_the_operator_started_are_regular_runs() -> None:
    caught_up = decide(downtime_state("Skip"), at(600.5))
    plan = decide(
        replace(downtime_state("Skip"), last_schedule_time=caught_up.last_schedule_time), at(661)
    )

    (run,) = plan.create
    assert (run.scheduled, run.trigger) == (at(660), Trigger.SCHEDULE)


def test_forbid_skips_while_a_run_is_active() -> None:
    spec = {"every": "10s", "concurrencyPolicy": "Forbid"}

    plan = decide(state(spec, cursor=at(10), jobs=(running(at(10)),)), at(20.2))

    assert plan.create == []
    (skipped,) = plan.records
    assert (skipped.result, skipped.scheduled_time) == (Result.SKIPPED, at(20))
    assert "task-x still running" in skipped.message
    assert plan.last_schedule_time == at(20)


def test_forbid_runs_when_nothing_is_active() -> None:
    done = JobView(name="task-x", run=Run(at(10)), result=Result.SUCCEEDED)
    spec = {"every": "10s", "concurrencyPolicy": "Forbid"}

    plan = decide(state(spec, cursor=at(10), jobs=(done,)), at(20.2))

    assert scheduled_runs(plan) == [(at(20), Trigger.SCHEDULE)]


def test_replace_deletes_the_active_run_and_starts_the_new_one() -> None:
    active = running(at(10))
    spec = {"every": "10s", "concurrencyPolicy": "Replace"}

    plan = decide(state(spec, cursor=at(10), jobs=(active,)), at(20.2))

    assert plan.delete == [active]
    assert scheduled_runs(plan) == [(at(20), Trigger.SCHEDULE)]
    (replaced,) = plan.records
    assert (replaced.result, replaced.job_name) == (Result.REPLACED, "task-x")


def test_allow_runs_alongside() -> None:
    plan = decide(state({"every": "10s"}, cursor=at(10), jobs=(running(at(10)),)), at(20.2))

    assert scheduled_runs(plan) == [(at(20), Trigger.SCHEDULE)]
    assert plan.delete == []


def test_suspend_starts_nothing_and_lets_times_pass() -> None:
    plan = decide(state({"every": "10s", "suspend": True}, cursor=at(10)), at(45))

    assert plan.create == []
    assert plan.records == []
    assert plan.last_schedule_time == at(40)
    assert plan.next_run_time is None
    assert plan.wake_at is None


def test_resuming_does_not_catch_up_the_suspended_times() -> None:
    resumed = replace(state({"every": "10s"}, cursor=at(10)), was_suspended=True)

    plan = decide(resumed, at(45))

    assert plan.create == []
    assert plan.records == []
    assert plan.last_schedule_time == at(40)
    assert plan.next_run_time == at(50)


def test_run_now_runs_once_per_token_even_when_suspended() -> None:
    spec = {"every": "1h", "suspend": True}

    first = decide(state(spec, token="t1"), at(5))
    again = decide(state(spec, token="t1", handled="t1"), at(6))
    second = decide(state(spec, token="t2", handled="t1"), at(7))

    assert [(r.trigger, r.token, r.scheduled) for r in first.create] == [
        (Trigger.MANUAL, "t1", at(5))
    ]
    assert first.run_now_token == "t1"
    assert again.create == []
    assert [r.token for r in second.create] == ["t2"]


def test_run_at_runs_once_then_has_no_next_run() -> None:
    spec = {"runAt": at(3).isoformat()}

    before = decide(state(spec), at(1))
    due = decide(state(spec), at(3.2))
    after = decide(state(spec, cursor=at(3)), at(10))

    assert before.wake_at == at(3)
    assert scheduled_runs(due) == [(at(3), Trigger.SCHEDULE)]
    assert due.next_run_time is None
    assert after.create == []
    assert after.next_run_time is None


def test_run_at_seen_too_late_is_missed() -> None:
    plan = decide(state({"runAt": at(-120).isoformat()}), at(0))

    assert plan.create == []
    assert [r.result for r in plan.records] == [Result.MISSED]


def test_jitter_delays_the_wake_up_not_the_scheduled_time() -> None:
    plan = decide(state({"every": "1h", "jitterSeconds": 600}), at(1))

    assert plan.next_run_time == at(3600)
    assert plan.wake_at is not None
    assert at(3600) <= plan.wake_at <= at(4200)
    assert decide(state({"every": "1h", "jitterSeconds": 600}), plan.wake_at).create == [
        Run(at(3600))
    ]


def test_max_runs_ends_the_schedule() -> None:
    plan = decide(state({"every": "10s", "maxRuns": 2}, cursor=at(10)), at(20.1))

    assert scheduled_runs(plan) == [(at(20), Trigger.SCHEDULE)]
    assert plan.next_run_time is None


def test_long_downtime_of_a_seconds_schedule_is_counted_quickly() -> None:
    spec = {"schedule": "* * * * * *", "startingDeadlineSeconds": 5}
    started = time.perf_counter()

    plan = decide(state(spec, since=at(86400.5)), at(86400.5))

    assert time.perf_counter() - started < 5
    late = plan.records[0]
    # A cron schedule cannot be counted without walking it: what was jumped over counts once.
    assert late.runs > WALK_STEPS
    assert "at least" in late.message
    assert scheduled_runs(plan)[-1] == (at(86400), Trigger.CATCH_UP)


def test_run_all_after_a_day_starts_the_newest_runs_and_counts_the_rest() -> None:
    spec = {"every": "1s", "missedRunPolicy": "RunAll", "startingDeadlineSeconds": 86400}

    plan = decide(state(spec, since=at(86400.5)), at(86400.5))

    runs = scheduled_runs(plan)
    assert len(runs) == MAX_RUNS_PER_DECISION
    assert runs[0] == (at(86400 - MAX_RUNS_PER_DECISION + 1), Trigger.CATCH_UP)
    assert runs[-1] == (at(86400), Trigger.CATCH_UP)
    [crowded] = [r for r in plan.records if r.reason == "TooManyRunsDue"]
    assert crowded.runs == 86400 - MAX_RUNS_PER_DECISION
    assert crowded.message.startswith(f"{86400 - MAX_RUNS_PER_DECISION} runs from ")
    assert plan.last_schedule_time == at(86400)


def test_a_late_reconcile_of_a_seconds_cron_starts_at_most_the_cap() -> None:
    spec = {"schedule": "* * * * * *", "startingDeadlineSeconds": 3600}

    plan = decide(state(spec, cursor=at(0)), at(3600.5))

    runs = scheduled_runs(plan)
    assert 0 < len(runs) <= MAX_RUNS_PER_DECISION
    assert runs[-1] == (at(3600), Trigger.SCHEDULE)
    [crowded] = [r for r in plan.records if r.reason == "TooManyRunsDue"]
    assert crowded.scheduled_time < runs[0][0]


def failed(scheduled: datetime, attempt: int, ended: datetime, token: str | None = None) -> JobView:
    trigger = Trigger.SCHEDULE if attempt == 1 else Trigger.RETRY
    return JobView(
        name=f"task-{attempt}",
        run=Run(scheduled, attempt, trigger, token),
        completion_time=ended,
        result=Result.FAILED,
    )


RETRYING = {"every": "1h", "retry": {"limit": 2, "backoff": {"initialSeconds": 5, "factor": 3}}}


def test_a_failed_run_is_retried_after_the_backoff() -> None:
    jobs = (failed(at(3600), 1, ended=at(3610)),)

    early = decide(state(RETRYING, cursor=at(3600), jobs=jobs), at(3614))
    due = decide(state(RETRYING, cursor=at(3600), jobs=jobs), at(3615))

    assert early.create == []
    assert early.wake_at == early.next_run_time == at(3615)
    assert due.create == [Run(at(3600), 2, Trigger.RETRY)]


def test_backoff_grows_by_its_factor_and_stops_at_the_limit() -> None:
    second = (failed(at(3600), 1, at(3610)), failed(at(3600), 2, at(3620)))
    third = (*second, failed(at(3600), 3, at(3700)))

    assert decide(state(RETRYING, cursor=at(3600), jobs=second), at(3634)).create == []
    assert decide(state(RETRYING, cursor=at(3600), jobs=second), at(3635)).create == [
        Run(at(3600), 3, Trigger.RETRY)
    ]
    exhausted = decide(state(RETRYING, cursor=at(3600), jobs=third), at(3800))
    assert exhausted.create == []
    assert exhausted.next_run_time == at(7200)


def test_retries_survive_the_deletion_of_the_failed_job() -> None:
    history = [
        HistoryEntry(at(3600), Result.FAILED, job_name="task-1777640400", completion_time=at(3610))
    ]

    plan = decide(replace(state(RETRYING, cursor=at(3600)), history=history), at(3615))

    assert plan.create == [Run(at(3600), 2, Trigger.RETRY)]


def test_manual_runs_are_retried_under_their_token() -> None:
    jobs = (failed(at(5), 1, at(10), token="t1"),)

    plan = decide(state(RETRYING, jobs=jobs, handled="t1", token="t1"), at(15))

    assert plan.create == [Run(at(5), 2, Trigger.RETRY, "t1")]


def test_no_retry_without_a_limit_or_while_suspended() -> None:
    jobs = (failed(at(3600), 1, at(3610)),)

    assert decide(state({"every": "1h"}, cursor=at(3600), jobs=jobs), at(4000)).create == []
    suspended = {**RETRYING, "suspend": True}
    assert decide(state(suspended, cursor=at(3600), jobs=jobs), at(4000)).create == []


def ended(scheduled: datetime, result: Result, name: str) -> JobView:
    done = scheduled + timedelta(seconds=1)
    return JobView(name=name, run=Run(scheduled), completion_time=done, result=result)


def test_a_task_stopped_after_consecutive_failures_starts_no_scheduled_run() -> None:
    spec = {"every": "10s", "stopAfterConsecutiveFailures": 2}
    stopped = replace(state(spec, cursor=at(20), token="t1"), consecutive_failures=2)

    plan = decide(stopped, at(30.5))

    assert [run.trigger for run in plan.create] == [Trigger.MANUAL]  # run-now still runs
    assert plan.next_run_time is None
    assert plan.last_schedule_time == at(30)  # the time passed while stopped is not a run


def test_the_failure_that_reaches_the_limit_stops_the_task_before_its_record() -> None:
    spec = {"every": "10s", "stopAfterConsecutiveFailures": 2}
    jobs = (ended(at(10), Result.FAILED, "task-a"), ended(at(20), Result.FAILED, "task-b"))

    plan = decide(replace(state(spec, cursor=at(20), jobs=jobs)), at(30.5))

    assert plan.create == []
    assert plan.next_run_time is None


def test_a_resumed_task_goes_on_from_now_without_catching_up() -> None:
    spec = {"every": "10s", "stopAfterConsecutiveFailures": 2}
    resumed = replace(state(spec, cursor=at(20)), consecutive_failures=0, was_stopped=True)

    plan = decide(resumed, at(90.5))

    assert plan.create == []
    assert plan.last_schedule_time == at(90)
    assert plan.next_run_time == at(100)
