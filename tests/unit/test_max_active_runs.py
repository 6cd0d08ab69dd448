"""The operator's cap on runs in flight (--max-active-runs), as `decide` applies it:
runs beyond the free slots wait, oldest first, and one waiting past its starting
deadline is Missed with a reason that says so."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from taskmaster.core.backfill import BackfillState
from taskmaster.core.decide import WAITING_RECHECK, decide
from taskmaster.core.names import Run, Trigger
from taskmaster.core.status import HistoryEntry, JobView, Result
from tests.unit.test_decide import at, scheduled_runs, state


def test_a_due_run_without_a_free_slot_waits_before_the_cursor() -> None:
    plan = decide(replace(state({"every": "1m"}), slots=0), at(60.5))

    assert plan.create == []
    assert plan.records == []
    assert plan.last_schedule_time is None  # still this task's business
    assert plan.waiting == at(60)
    assert plan.next_run_time == at(60)
    # A freed slot wakes it; failing that, its deadline (60 s by default) does.
    assert plan.wake_at == at(120) + timedelta(microseconds=1)


def test_a_run_that_waited_starts_late_as_scheduled_not_as_missed() -> None:
    # 40 s late: far past the catch-up threshold, but it waited for a slot.
    task = replace(state({"every": "1m", "missedRunPolicy": "Skip"}), slots=1)
    plan = decide(replace(task, waiting_from=at(60)), at(100))

    assert scheduled_runs(plan) == [(at(60), Trigger.SCHEDULE)]
    assert plan.records == []
    assert plan.waiting is None
    assert plan.last_schedule_time == at(60)


def test_a_run_that_waited_past_its_deadline_is_missed_for_the_cap() -> None:
    task = replace(state({"every": "1m", "startingDeadlineSeconds": 30}), slots=0)
    plan = decide(replace(task, waiting_from=at(60)), at(91))

    assert plan.create == []
    [missed] = plan.records
    assert (missed.result, missed.reason, missed.scheduled_time) == (
        Result.MISSED,
        "MaxActiveRuns",
        at(60),
    )
    assert "startingDeadlineSeconds (30s)" in (missed.message or "")
    assert "--max-active-runs" in (missed.message or "")
    assert plan.last_schedule_time == at(60)
    assert plan.waiting is None


def test_a_time_late_without_waiting_keeps_its_own_reason() -> None:
    task = replace(state({"every": "1m", "startingDeadlineSeconds": 30}), slots=0)
    [missed] = decide(task, at(91)).records

    assert missed.reason == "MissedStartingDeadline"


def test_the_oldest_due_runs_take_the_free_slots() -> None:
    task = state({"every": "1s", "missedRunPolicy": "RunAll"}, since=at(0))
    plan = decide(replace(task, slots=2), at(5.5))

    assert scheduled_runs(plan) == [(at(1), Trigger.SCHEDULE), (at(2), Trigger.SCHEDULE)]
    assert plan.last_schedule_time == at(2)
    assert plan.waiting == at(3)

    # The next decision takes up from the oldest held time.
    jobs = tuple(JobView(f"task-{i}", Run(at(i))) for i in (1, 2))
    again = decide(
        replace(task, slots=3, waiting_from=at(3), jobs=jobs, last_schedule_time=at(2)), at(5.7)
    )
    assert scheduled_runs(again) == [(at(t), Trigger.SCHEDULE) for t in (3, 4, 5)]
    assert again.waiting is None


def test_a_manual_run_waits_for_a_slot_and_its_token_stays_unhandled() -> None:
    plan = decide(replace(state({"every": "1h"}, token="t1"), slots=0), at(10))

    assert plan.create == []
    assert plan.run_now_token is None
    assert plan.waiting is not None
    assert plan.wake_at == at(10) + WAITING_RECHECK

    later = decide(replace(state({"every": "1h"}, token="t1"), slots=1), at(20))
    assert [run.trigger for run in later.create] == [Trigger.MANUAL]
    assert later.run_now_token == "t1"


def test_a_manual_run_of_a_suspended_task_waits_for_a_slot_too() -> None:
    plan = decide(replace(state({"every": "1h", "suspend": True}, token="t1"), slots=0), at(10))

    assert plan.create == []
    assert plan.run_now_token is None
    assert plan.wake_at == at(10) + WAITING_RECHECK


def test_a_retry_waits_for_a_slot_and_is_due_again() -> None:
    spec = {"every": "1h", "retry": {"limit": 2, "backoff": {"initialSeconds": 10}}}
    failed = JobView("task-3600", Run(at(3600)), at(3600), at(3601), Result.FAILED)
    task = replace(state(spec, jobs=(failed,)), last_schedule_time=at(3600), slots=0)

    plan = decide(task, at(3620))
    assert plan.create == []
    assert plan.waiting == at(3600)
    assert plan.wake_at == at(3620) + WAITING_RECHECK

    again = decide(replace(task, slots=1), at(3630))
    assert [(run.attempt, run.trigger) for run in again.create] == [(2, Trigger.RETRY)]


def test_a_backfill_starts_only_as_many_runs_as_there_are_slots() -> None:
    request = '{"token": "b1", "from": "2026-05-01T00:00:00Z", "to": "2026-05-01T00:09:00Z"}'
    task = replace(
        state({"every": "1m", "concurrencyPolicy": "Allow"}),
        backfill_request=request,
        slots=3,
    )
    plan = decide(task, at(30))

    assert [run.trigger for run in plan.create] == [Trigger.BACKFILL] * 3
    assert plan.backfill is not None
    assert plan.backfill.state is BackfillState.RUNNING
    assert plan.waiting is not None
    assert plan.wake_at is not None
    assert plan.wake_at > at(30)  # a freed slot wakes it


def test_history_of_a_waited_time_is_not_counted_twice() -> None:
    # A waited time recorded Missed is dealt with: a later decision passes over it.
    missed = HistoryEntry(
        scheduled_time=at(60), result=Result.MISSED, reason="MaxActiveRuns", runs=1
    )
    task = replace(
        state({"every": "1m", "startingDeadlineSeconds": 30}),
        history=(missed,),
        waiting_from=at(60),
        slots=1,
    )
    plan = decide(task, at(121))

    assert scheduled_runs(plan) == [(at(120), Trigger.SCHEDULE)]
    assert plan.records == []


def test_without_a_cap_nothing_waits() -> None:
    plan = decide(state({"every": "1s", "missedRunPolicy": "RunAll"}, since=at(0)), at(5.5))

    assert len(plan.create) == 5
    assert plan.waiting is None


def test_a_frequent_task_that_keeps_waiting_records_its_missed_times_in_batches() -> None:
    task = replace(state({"every": "1s"}), slots=0, waiting_from=at(1))
    plan = decide(task, at(61.5))  # at(1) has waited past its 60 s deadline

    [missed] = plan.records
    assert (missed.reason, missed.runs) == ("MaxActiveRuns", 1)
    # Not woken for each next second's deadline: in ten seconds, for all of them.
    assert plan.wake_at == at(71.5)

    later = decide(
        replace(task, last_schedule_time=plan.last_schedule_time, waiting_from=plan.waiting),
        at(71.5),
    )
    [batch] = later.records
    assert (batch.reason, batch.runs) == ("MaxActiveRuns", 10)  # at(2) to at(11)
