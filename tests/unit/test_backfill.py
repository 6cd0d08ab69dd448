"""Backfill: every scheduled time of a past range once, oldest first, as the user asked."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmaster.core.admission import backfill_problems, new_backfill
from taskmaster.core.backfill import (
    MAX_BACKFILL_RUNS,
    Backfill,
    BackfillRequest,
    BackfillState,
    BadRequest,
    backfill_events,
    check,
    parse_request,
)
from taskmaster.core.decide import TaskState, decide
from taskmaster.core.names import Run, TaskRef, Trigger, job_name
from taskmaster.core.render import render_job
from taskmaster.core.spec import parse_spec
from taskmaster.core.status import HistoryEntry, JobView, Result

CREATED = datetime(2026, 5, 10, tzinfo=UTC)
NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)
TASK = TaskRef("ns", "task", "uid")
WORKLOAD = {"task": {"container": {"image": "busybox"}}}


def spec_of(**fields: Any) -> Any:
    return parse_spec({**fields, **WORKLOAD}, namespace="ns", name="task", created=CREATED)


def day(d: int, h: int = 0) -> datetime:
    return datetime(2026, 5, d, h, tzinfo=UTC)


def annotation(name: str = "b1", start: str = "2026-05-01T00:00:00Z", end: str = "") -> str:
    return json.dumps({"token": name, "from": start, "to": end or "2026-05-03T00:00:00Z"})


def state(spec: Any, raw: str | None = None, **fields: Any) -> TaskState:
    return TaskState(
        task=TASK,
        spec=spec,
        jobs=fields.pop("jobs", ()),
        last_schedule_time=NOW,
        since=CREATED,
        backfill_request=raw if raw is not None else annotation(),
        **fields,
    )


def backfill_runs(plan: Any) -> list[datetime]:
    return [run.scheduled for run in plan.create if run.trigger is Trigger.BACKFILL]


def test_a_daily_task_backfills_each_day_of_the_range_oldest_first_under_allow() -> None:
    plan = decide(state(spec_of(schedule="@daily")), NOW)

    assert backfill_runs(plan) == [day(1), day(2), day(3)]  # both ends included
    assert all(run.token == "b1" and run.backfill for run in plan.create)
    assert plan.backfill is not None
    assert plan.backfill.to_status() == {
        "token": "b1",
        "state": "Completed",
        "from": "2026-05-01T00:00:00Z",
        "to": "2026-05-03T00:00:00Z",
        "runs": 3,
        "started": 3,
        "lastScheduledTime": "2026-05-03T00:00:00Z",
        "message": None,  # written as null: no key of an earlier backfill outlives it
    }


def test_under_forbid_one_runs_at_a_time_and_the_next_waits_for_its_end() -> None:
    spec = spec_of(schedule="@daily", concurrencyPolicy="Forbid")
    first = decide(state(spec), NOW)
    assert backfill_runs(first) == [day(1)]
    assert first.backfill is not None
    run = first.create[0]
    running = JobView(job_name("task", run), run)

    waiting = decide(state(spec, jobs=(running,), backfill=first.backfill), NOW)
    assert backfill_runs(waiting) == []
    assert waiting.backfill is None  # unchanged

    done = replace(running, result=Result.SUCCEEDED, completion_time=NOW)
    second = decide(state(spec, jobs=(done,), backfill=first.backfill), NOW)
    assert backfill_runs(second) == [day(2)]


def test_a_lost_status_starts_no_time_twice_and_skips_none() -> None:
    spec = spec_of(schedule="@daily", concurrencyPolicy="Forbid")
    first = decide(state(spec), NOW)
    assert first.backfill is not None
    run = first.create[0]
    ended = JobView(job_name("task", run), run, result=Result.SUCCEEDED, completion_time=NOW)

    # The status that recorded the first run was never written: it says "just started".
    fresh = replace(first.backfill, started=0, last_scheduled_time=None)
    again = decide(state(spec, jobs=(ended,), backfill=fresh), NOW)

    assert backfill_runs(again) == [day(2)]
    assert again.backfill is not None
    assert again.backfill.started == 2


def test_runs_known_only_from_the_history_are_not_started_again() -> None:
    spec = spec_of(schedule="@daily")
    first = decide(state(spec), NOW)
    history = [
        HistoryEntry(r.scheduled, Result.SUCCEEDED, job_name("task", r), trigger=r.trigger)
        for r in first.create[:2]
    ]
    fresh = Backfill("b1", BackfillState.RUNNING, day(1), day(3), runs=3)

    again = decide(state(spec, history=history, backfill=fresh), NOW)

    assert backfill_runs(again) == [day(3)]


def test_backfill_runs_are_not_scheduled_times_dealt_with() -> None:
    # A backfill Job at a time the schedule has too does not stand for the scheduled run.
    spec = spec_of(every="1h", startAt="2026-05-10T11:00:00Z", startingDeadlineSeconds=3600)
    run = Run(day(10, 11), trigger=Trigger.BACKFILL, token="old", backfill=True)
    job = JobView(job_name("task", run), run, result=Result.SUCCEEDED)

    plan = decide(replace(state(spec), last_schedule_time=None, jobs=(job,)), NOW)

    assert day(10, 11) in [r.scheduled for r in plan.create if not r.backfill]


def test_a_suspended_task_holds_its_backfill() -> None:
    assert backfill_runs(decide(state(spec_of(schedule="@daily", suspend=True)), NOW)) == []


def test_a_done_request_runs_no_more_whatever_the_range_says_now() -> None:
    done = Backfill("b1", BackfillState.COMPLETED, day(1), day(3), runs=3, started=3)
    raw = annotation(end="2026-05-05T00:00:00Z")

    assert decide(state(spec_of(schedule="@daily"), raw, backfill=done), NOW).create == []


@pytest.mark.parametrize(
    ("fields", "end", "refusal"),
    [
        (
            {"every": "1s"},
            "2026-05-03T00:00:00Z",
            "the range holds 172801 runs, more than the 1000",
        ),
        ({"schedule": "* * * * *"}, "2026-05-03T00:00:00Z", "the range holds about 2881 runs"),
        ({"schedule": "@daily"}, "2026-05-11T00:00:00Z", "is in the future"),
        ({"schedule": "0 0 1 1 *"}, "2026-05-03T00:00:00Z", "the range holds no scheduled time"),
    ],
)
def test_a_request_over_the_bound_or_in_the_future_is_refused_with_its_count(
    fields: dict[str, Any], end: str, refusal: str
) -> None:
    plan = decide(state(spec_of(**fields), annotation(end=end)), NOW)

    assert backfill_runs(plan) == []
    assert plan.backfill is not None
    assert plan.backfill.state is BackfillState.REFUSED
    assert refusal in plan.backfill.message


def test_the_bound_itself_is_allowed() -> None:
    request = BackfillRequest("b", day(1), day(1) + timedelta(seconds=MAX_BACKFILL_RUNS - 1))

    assert check(spec_of(every="1s").schedule, request, NOW) == (MAX_BACKFILL_RUNS, None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tomorrow", "must be a JSON object"),
        ('{"from": "2026-05-01T00:00:00Z", "to": "2026-05-02T00:00:00Z"}', "token: must be"),
        (
            '{"token": "t", "from": "2026-05-01", "to": "2026-05-02T00:00:00Z"}',
            "from: '2026-05-01'",
        ),
        ('{"token": "t", "from": "2026-05-01T00:00:00", "to": "2026-05-02T00:00:00Z"}', "offset"),
        (
            '{"token": "t", "from": "0001-01-01T00:00:00+01:00", "to": "2026-05-02T00:00:00Z"}',
            "range",
        ),
        ('{"token": "t", "from": 5, "to": "2026-05-02T00:00:00Z"}', "from: must be an RFC 3339"),
        ('{"token": "t", "from": "2026-05-02T00:00:00Z", "to": "2026-05-01T00:00:00Z"}', "to:"),
        ('{"token": "t", "from": "1900-05-02T00:00:00Z", "to": "2026-05-01T00:00:00Z"}', "1970"),
        ("x" * 2000, "longer than 1024"),
    ],
)
def test_a_bad_annotation_is_refused_once_naming_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(value)
    spec = spec_of(schedule="@daily")

    plan = decide(state(spec, value), NOW)
    assert plan.backfill is not None
    assert plan.backfill.state is BackfillState.REFUSED
    assert plan.backfill.message.startswith("metadata.annotations[taskmaster.dev/backfill]: ")
    again = decide(state(spec, value, backfill=plan.backfill), NOW)
    assert again.backfill is None  # reported once


def test_the_webhook_refuses_a_new_request_naming_the_annotation() -> None:
    old = {"metadata": {"annotations": {"taskmaster.dev/backfill": annotation()}}}
    new = {"metadata": {"annotations": {"taskmaster.dev/backfill": annotation("b2")}}}

    assert new_backfill(old, old) is None
    assert new_backfill(old, new) == annotation("b2")
    problems = backfill_problems(annotation(end="2026-06-01T00:00:00Z"), spec_of(every="1h"), NOW)
    assert [p.path for p in problems] == ["metadata.annotations[taskmaster.dev/backfill]"]


def test_backfill_jobs_are_named_by_token_and_time_and_read_back() -> None:
    run = Run(day(1), trigger=Trigger.BACKFILL, token="b1", backfill=True)
    other = replace(run, token="b2")
    job = render_job(TASK, spec_of(schedule="@daily"), run)

    assert job["metadata"]["name"] != job_name("task", other)
    assert job["metadata"]["name"].startswith("task-b")
    assert job["metadata"]["labels"]["taskmaster.dev/trigger"] == "backfill"
    assert job["metadata"]["annotations"]["taskmaster.dev/backfill"] == "b1"
    view = JobView.from_job(job)
    assert view is not None
    assert view.run == run
    retry = replace(run, attempt=2, trigger=Trigger.RETRY)
    assert job_name("task", retry) == f"{job['metadata']['name']}-2"


def test_a_failed_backfill_run_is_retried_under_its_own_name() -> None:
    spec = spec_of(schedule="@daily", retry={"limit": 1, "backoff": {"initialSeconds": 0}})
    run = Run(day(1), trigger=Trigger.BACKFILL, token="b1", backfill=True)
    failed = JobView(job_name("task", run), run, result=Result.FAILED, completion_time=NOW)
    done = Backfill("b1", BackfillState.COMPLETED, day(1), day(1), runs=1, started=1)

    plan = decide(
        state(spec, annotation(end="2026-05-01T00:00:00Z"), jobs=(failed,), backfill=done), NOW
    )

    assert [(r.trigger, r.attempt, r.backfill) for r in plan.create] == [(Trigger.RETRY, 2, True)]
    assert job_name("task", plan.create[0]) == f"{failed.name}-2"


def test_events_say_when_a_backfill_starts_completes_or_is_refused() -> None:
    running = Backfill("b1", BackfillState.RUNNING, day(1), day(3), runs=3, started=1)
    completed = replace(running, state=BackfillState.COMPLETED, started=3)
    refusal = Backfill("b2", BackfillState.REFUSED, message="to is in the future")

    assert [e[1] for e in backfill_events(None, running)] == ["BackfillStarted"]
    assert [e[1] for e in backfill_events(None, completed)] == [
        "BackfillStarted",
        "BackfillCompleted",
    ]
    assert [e[1] for e in backfill_events(running, completed)] == ["BackfillCompleted"]
    assert backfill_events(running, replace(running, started=2)) == []
    assert backfill_events(completed, refusal) == [
        ("Warning", "BackfillRefused", "backfill b2: to is in the future")
    ]


def test_a_new_request_under_forbid_while_a_run_is_active_does_not_inherit_the_last_one() -> None:
    spec = spec_of(schedule="@daily", concurrencyPolicy="Forbid")
    done = Backfill("b0", BackfillState.COMPLETED, day(1), day(9), runs=9, started=9)
    done = replace(done, last_scheduled_time=day(9))
    active = JobView("task-x", Run(day(10, 11)))
    previous = {"backfill": done.to_status()}

    plan = decide(state(spec, annotation("b1"), jobs=(active,), backfill=done), NOW)

    assert plan.backfill is not None
    written = plan.backfill.to_status()
    assert written["lastScheduledTime"] is None  # the merge patch removes b0's
    merged = {**previous["backfill"], **written}
    assert Backfill.from_status({k: v for k, v in merged.items() if v is not None}) == plan.backfill


def test_under_forbid_failed_backfill_runs_are_retried_one_at_a_time() -> None:
    spec = spec_of(
        schedule="@daily",
        concurrencyPolicy="Forbid",
        retry={"limit": 1, "backoff": {"initialSeconds": 0}},
    )
    failed = tuple(
        JobView(
            job_name("task", run),
            run,
            result=Result.FAILED,
            completion_time=NOW - timedelta(minutes=1),
        )
        for run in (
            Run(day(d), trigger=Trigger.BACKFILL, token="b1", backfill=True) for d in (1, 2, 3)
        )
    )
    done = Backfill("b1", BackfillState.COMPLETED, day(1), day(3), runs=3, started=3)

    plan = decide(state(spec, jobs=failed, backfill=done), NOW)

    assert [(r.scheduled, r.attempt) for r in plan.create] == [(day(1), 2)]


def test_under_replace_a_scheduled_run_does_not_supersede_a_backfill_retry() -> None:
    spec = spec_of(
        every="1h",
        startAt="2026-05-10T11:00:00Z",
        concurrencyPolicy="Replace",
        retry={"limit": 1, "backoff": {"initialSeconds": 0}},
    )
    run = Run(day(1), trigger=Trigger.BACKFILL, token="b1", backfill=True)
    failed = JobView(job_name("task", run), run, result=Result.FAILED, completion_time=NOW)
    done = Backfill("b1", BackfillState.COMPLETED, day(1), day(1), runs=1, started=1)
    cursor = day(10, 11)

    plan = decide(
        replace(state(spec, jobs=(failed,), backfill=done), last_schedule_time=cursor),
        NOW + timedelta(seconds=1),
    )

    assert [(r.trigger, r.scheduled) for r in plan.create] == [
        (Trigger.RETRY, day(1)),
        (Trigger.SCHEDULE, day(10, 12)),
    ]
    assert [r.result for r in plan.records] == []
