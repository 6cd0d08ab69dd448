"""Spec parsing: defaults, every field, and errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest

from taskmaster.core.schedule import Cron, Every, RunAt
from taskmaster.core.spec import (
    Backoff,
    ConcurrencyPolicy,
    InvalidSpec,
    MissedRunPolicy,
    parse_spec,
)

CREATED = datetime(2026, 5, 1, 12, tzinfo=UTC)
CONTAINER = {"task": {"container": {"image": "busybox", "command": ["true"]}}}


def parse(spec: dict[str, Any], name: str = "task") -> Any:
    return parse_spec(spec, namespace="ns", name=name, created=CREATED)


def errors(spec: dict[str, Any], name: str = "task") -> list[str]:
    with pytest.raises(InvalidSpec) as invalid:
        parse(spec, name)
    return [str(e) for e in invalid.value.errors]


def test_defaults() -> None:
    spec = parse({"schedule": "*/5 * * * *", **CONTAINER})

    assert isinstance(spec.schedule, Cron)
    assert spec.time_zone == "UTC"
    assert spec.concurrency_policy is ConcurrencyPolicy.ALLOW
    assert spec.missed_run_policy is MissedRunPolicy.RUN_LATEST
    assert spec.starting_deadline_seconds == 60
    assert spec.suspend is False
    assert (spec.successful_jobs_history_limit, spec.failed_jobs_history_limit) == (3, 1)
    assert spec.history_limit == 10
    assert spec.retry.limit == 0
    assert spec.timeout_seconds is None
    assert spec.workload.container is not None
    assert spec.workload.container.command == ("true",)


def test_every_fields() -> None:
    spec = parse(
        {
            "every": "1h30m",
            "startAt": "2026-05-02T00:00:00+02:00",
            "endAt": "2026-06-01T00:00:00Z",
            "maxRuns": 5,
            "jitterSeconds": 10,
            "suspend": True,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 30,
            "missedRunPolicy": "RunAll",
            "timeoutSeconds": 600,
            "retry": {"limit": 3, "backoff": {"initialSeconds": 5, "factor": 3, "maxSeconds": 60}},
            "successfulJobsHistoryLimit": 0,
            "failedJobsHistoryLimit": 5,
            "historyLimit": 20,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}},
        }
    )

    assert spec.schedule == Every(
        timedelta(hours=1, minutes=30), datetime(2026, 5, 1, 22, tzinfo=UTC)
    )
    assert spec.timeline.start_at == datetime(2026, 5, 1, 22, tzinfo=UTC)
    assert spec.timeline.end_at == datetime(2026, 6, 1, tzinfo=UTC)
    assert spec.timeline.max_runs == 5
    assert spec.jitter_seconds == 10
    assert spec.suspend is True
    assert spec.concurrency_policy is ConcurrencyPolicy.FORBID
    assert spec.starting_deadline_seconds == 30
    assert spec.missed_run_policy is MissedRunPolicy.RUN_ALL
    assert spec.timeout_seconds == 600
    assert spec.retry.limit == 3
    assert spec.retry.backoff == Backoff(initial_seconds=5, factor=3, max_seconds=60)
    assert spec.successful_jobs_history_limit == 0
    assert spec.failed_jobs_history_limit == 5
    assert spec.history_limit == 20
    assert spec.workload.job_template is not None


def test_every_without_start_is_anchored_at_creation() -> None:
    spec = parse({"every": "10s", **CONTAINER})

    assert spec.schedule == Every(timedelta(seconds=10), CREATED)


def test_run_at() -> None:
    spec = parse({"runAt": "2026-05-01T12:00:03Z", **CONTAINER})

    assert spec.schedule == RunAt(datetime(2026, 5, 1, 12, 0, 3, tzinfo=UTC))


def test_time_zone() -> None:
    spec = parse({"schedule": "0 9 * * *", "timeZone": "America/New_York", **CONTAINER})

    assert spec.time_zone == "America/New_York"
    assert spec.timeline.next() == datetime(2026, 5, 1, 13, tzinfo=UTC)


def test_http_task() -> None:
    spec = parse(
        {
            "every": "5m",
            "task": {
                "http": {
                    "url": "https://example.test/hook",
                    "method": "post",
                    "headers": {"X-A": "b"},
                    "body": "{}",
                    "timeoutSeconds": 5,
                    "successCodes": "200-299,304",
                }
            },
        }
    )

    assert spec.workload.http is not None
    assert spec.workload.http.method == "POST"
    assert spec.workload.http.success_codes == "200-299,304"


def test_backoff_delays_grow_to_the_cap() -> None:
    backoff = Backoff(initial_seconds=10, factor=2, max_seconds=35)

    assert [backoff.delay(a).total_seconds() for a in (2, 3, 4, 5)] == [10, 20, 35, 35]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule: '61 * * * *' is not a valid cron"),
        ({"schedule": "0 0 30 2 *"}, "spec.schedule: '0 0 30 2 *' can never fire"),
        ({"schedule": "* * * * *", "timeZone": "Mars/Olympus"}, "spec.timeZone: 'Mars/Olympus'"),
        (
            {"schedule": "* * * * *", "every": "5m"},
            "spec: exactly one of schedule, schedules, runAt, every",
        ),
        ({}, "spec: exactly one of schedule, schedules, runAt, every is required"),
        ({"every": "0.5s"}, "spec.every: '0.5s' is shorter than the minimum of 1s"),
        ({"every": "5"}, "spec.every: '5' is not a duration"),
        ({"runAt": "tomorrow"}, "spec.runAt: 'tomorrow' is not an RFC 3339 time"),
        ({"runAt": "2026-05-01T12:00:00"}, "spec.runAt: '2026-05-01T12:00:00' is not an RFC 3339"),
        ({"every": "1m", "maxRuns": 0}, "spec.maxRuns: must be at least 1, got 0"),
        ({"every": "1m", "jitterSeconds": -1}, "spec.jitterSeconds: must be at least 0, got -1"),
        (
            {"every": "1m", "startingDeadlineSeconds": -5},
            "spec.startingDeadlineSeconds: must be at least 0",
        ),
        ({"every": "1m", "retry": {"limit": -1}}, "spec.retry.limit: must be at least 0"),
        (
            {"every": "1m", "retry": {"backoff": {"factor": 0.5}}},
            "spec.retry.backoff.factor: must be at least 1",
        ),
        ({"every": "1m", "concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy: must be one"),
        ({"every": "1m", "missedRunPolicy": "All"}, "spec.missedRunPolicy: must be one of"),
        ({"every": "1m", "suspend": "yes"}, "spec.suspend: must be true or false"),
        ({"every": "1m", "timeoutSeconds": 0}, "spec.timeoutSeconds: must be at least 1"),
        ({"every": "1m", "historyLimit": 1000}, "spec.historyLimit: must be at most 100"),
        ({"schedule": "@daily", "timeZone": ""}, "spec.timeZone: must not be empty"),
        ({"schedule": "0 0 * * 5L"}, "spec.schedule: the day-of-week field '5L' has '5L'"),
        ({"schedule": "0 0 L-2 * *"}, "spec.schedule: the day-of-month field 'L-2'"),
        ({"schedule": "0 0 LW * *"}, "spec.schedule: the day-of-month field 'LW'"),
        ({"schedule": "0 0 * * L"}, "spec.schedule: the day-of-week field 'L'"),
        ({"schedule": "0 ? * * *"}, "spec.schedule: the hour field '?'"),
        ({"schedules": []}, "spec.schedules: must be a list of at least one"),
        ({"schedules": [{"schedule": "@daily"}] * 11}, "spec.schedules: must have at most 10"),
        ({"schedules": [{"schedule": "@daily"}, "x"]}, "spec.schedules[1]: must be an object"),
        (
            {"schedules": [{"schedule": "@daily"}, {"schedule": "0 0 30 2 *"}]},
            "spec.schedules[1].schedule: '0 0 30 2 *' can never fire",
        ),
        (
            {"schedules": [{"schedule": "@daily", "timeZone": ""}]},
            "spec.schedules[0].timeZone: must not be empty",
        ),
        (
            {"every": "1m", "stopAfterConsecutiveFailures": 0},
            "spec.stopAfterConsecutiveFailures: must be at least 1",
        ),
        (
            {"every": "1m", "startAt": "2026-06-01T00:00:00Z", "endAt": "2026-05-01T00:00:00Z"},
            "spec.endAt: must be after startAt",
        ),
        (
            {"runAt": "2026-05-01T12:00:00Z", "maxRuns": 2},
            "spec.maxRuns: applies to recurring tasks",
        ),
    ],
)
def test_errors_name_the_field(spec: dict[str, Any], expected: str) -> None:
    found = errors({**CONTAINER, **spec})

    assert any(e.startswith(expected) for e in found), found


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ({}, "spec: exactly one of jobTemplate, task is required"),
        (
            {"jobTemplate": {"spec": {}}, "task": {"container": {"image": "x"}}},
            "spec: exactly one of jobTemplate, task is required; got jobTemplate, task",
        ),
        ({"jobTemplate": {"metadata": {}}}, "spec.jobTemplate: must be a Job template"),
        ({"task": {}}, "spec.task: exactly one of container, http"),
        ({"task": {"container": {}}}, "spec.task.container.image: is required"),
        ({"task": {"container": {"image": "x", "command": "true"}}}, "spec.task.container.command"),
        ({"task": {"http": {"url": "ftp://x"}}}, "spec.task.http.url: must be an http"),
    ],
)
def test_workload_errors(workload: dict[str, Any], expected: str) -> None:
    found = errors({"every": "1m", **workload})

    assert any(e.startswith(expected) for e in found), found


def test_all_errors_are_reported_at_once() -> None:
    found = errors({"schedule": "bad", "timeZone": "Nowhere/Land", "maxRuns": -1})

    assert [e.split(":")[0] for e in found] == [
        "spec.timeZone",
        "spec.schedule",
        "spec.maxRuns",
        "spec",
    ]


def test_long_names_are_refused() -> None:
    assert errors({"every": "1m", **CONTAINER}, name="a" * 254) == [
        "metadata.name: must be at most 253 characters"
    ]


def test_several_schedules_run_at_the_union_of_their_times_once_per_instant() -> None:
    spec = parse(
        {
            "schedules": [
                {"schedule": "0 9 * * *", "timeZone": "Europe/Paris"},
                {"schedule": "0 8 * * *"},  # the task's zone, here UTC
                {"schedule": "0 7 * * *"},  # 09:00 in Paris in May: the same instant
            ],
            **CONTAINER,
        }
    )

    assert list(islice(spec.timeline.times(), 3)) == [
        datetime(2026, 5, 2, 7, tzinfo=UTC),
        datetime(2026, 5, 2, 8, tzinfo=UTC),
        datetime(2026, 5, 3, 7, tzinfo=UTC),
    ]


def test_an_entry_without_a_zone_follows_the_task_s() -> None:
    spec = parse({"schedules": [{"schedule": "0 9 * * *"}], "timeZone": "Asia/Tokyo", **CONTAINER})

    assert spec.timeline.next() == datetime(2026, 5, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "first_times"),
    [
        # Hand-checked on the 2027 calendar.
        ("0 0 L * *", ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]),
        ("0 0 L 2 *", ["2027-02-28", "2028-02-29", "2029-02-28"]),
        ("0 0 * * 5#2", ["2027-01-08", "2027-02-12", "2027-03-12", "2027-04-09"]),
        ("0 0 * * FRI#2", ["2027-01-08", "2027-02-12"]),
        ("0 0 * * 1#5", ["2027-03-29", "2027-05-31", "2027-08-30", "2027-11-29"]),
        # 15 May 2027 is a Saturday (the Friday before), 15 August a Sunday (the Monday after).
        ("0 0 15W 5,8 *", ["2027-05-14", "2027-08-16"]),
        # 1 May 2027 is a Saturday: the nearest weekday within May is Monday the 3rd,
        # never Friday 30 April.
        ("0 0 1W 5 *", ["2027-05-03", "2028-05-01"]),
        # 31 October 2027 is a Sunday: Friday the 29th, not Monday 1 November.
        ("0 0 31W 10 *", ["2027-10-29", "2028-10-31"]),
        # 31W runs only in months with a 31st.
        ("0 0 31W * *", ["2027-01-29", "2027-03-31", "2027-05-31", "2027-07-30"]),
        ("0 0 ? * MON", ["2027-01-04", "2027-01-11"]),
        ("0 0 1 JAN-MAR ?", ["2027-01-01", "2027-02-01", "2027-03-01", "2028-01-01"]),
        ("0 0 * * SUN", ["2027-01-03", "2027-01-10"]),
        ("0 0 * * 7", ["2027-01-03", "2027-01-10"]),  # 7 is Sunday too
    ],
)
def test_cron_l_w_hash_question_mark_and_names(expression: str, first_times: list[str]) -> None:
    spec = parse({"schedule": expression, "startAt": "2027-01-01T00:00:00Z", **CONTAINER})

    times = [t.date().isoformat() for t in islice(spec.timeline.times(), len(first_times))]
    assert times == first_times
