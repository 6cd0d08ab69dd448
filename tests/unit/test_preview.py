"""The schedule preview: the next run times of a spec and its schedule in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmaster.core.decide import due_at
from taskmaster.core.preview import MAX_PREVIEW, describe_schedule, upcoming
from taskmaster.core.spec import parse_spec
from taskmaster.kubectl.cli import main

CREATED = datetime(2026, 5, 1, 12, tzinfo=UTC)
WORKLOAD = {"task": {"container": {"image": "busybox"}}}


def spec_of(**fields: Any) -> Any:
    return parse_spec({**fields, **WORKLOAD}, namespace="ns", name="t", created=CREATED)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"schedule": "*/15 * * * *"}, "Every 15 minutes, UTC"),
        (
            {"schedule": "30 2 * * 1-5", "timeZone": "Europe/Paris"},
            "At 02:30, Monday through Friday, Europe/Paris",
        ),
        ({"schedule": "@daily"}, "At 00:00, UTC"),
        ({"schedule": "0 0 L * *"}, "At 00:00, on the last day of the month, UTC"),
        ({"schedule": "0 0 * * 5#2"}, "At 00:00, on the second Friday of the month, UTC"),
        ({"schedule": "0 0 15W * *"}, "At 00:00, on the weekday nearest day 15 of the month, UTC"),
        ({"every": "1h30m"}, "Every 1 hour 30 minutes"),
        ({"every": "1h"}, "Every hour"),
        ({"runAt": "2026-05-02T08:00:00Z"}, "Once, at 2026-05-02T08:00:00Z"),
        (
            {"every": "30s", "maxRuns": 5, "jitterSeconds": 10},
            "Every 30 seconds, at most 5 runs, each started up to 10 seconds late (jitter)",
        ),
        (
            {"schedule": "@hourly", "startAt": "2026-06-01T00:00:00Z"},
            "Every hour, UTC, from 2026-06-01T00:00:00Z",
        ),
        (
            {
                "schedules": [
                    {"schedule": "0 9 * * MON-FRI", "timeZone": "Europe/Paris"},
                    {"schedule": "@daily"},
                ]
            },
            "At 09:00, Monday through Friday, Europe/Paris; at 00:00, UTC",
        ),
    ],
)
def test_a_schedule_in_plain_words(fields: dict[str, Any], words: str) -> None:
    assert describe_schedule(spec_of(**fields)) == words


def test_hashed_fields_are_described_as_the_values_this_task_gets() -> None:
    spec = spec_of(schedule="H * * * *")
    minute = next(spec.timeline.times()).minute

    assert describe_schedule(spec) == f"At {minute} minutes past the hour, UTC"


def test_upcoming_runs_are_the_operator_s_times_and_starts() -> None:
    spec = spec_of(every="10m", jitterSeconds=120, maxRuns=3)

    runs = upcoming(spec, "ns/t", CREATED, 10)

    assert [run.scheduled for run in runs] == [CREATED + timedelta(minutes=m) for m in (10, 20, 30)]
    assert [run.starts for run in runs] == [due_at("ns/t", spec, run.scheduled) for run in runs]
    assert any(run.starts > run.scheduled for run in runs)


def test_upcoming_respects_the_window_and_the_bound() -> None:
    windowed = spec_of(every="1s", startAt="2026-06-01T00:00:00Z", endAt="2026-06-01T00:00:02Z")
    endless = spec_of(every="1s")

    assert len(upcoming(windowed, "ns/t", CREATED, 10)) == 3
    assert len(upcoming(endless, "ns/t", CREATED, 10**9)) == MAX_PREVIEW
    assert upcoming(endless, "ns/t", CREATED, 0) == []


def test_upcoming_crosses_a_fall_back_in_both_passes_for_an_interval_style_cron() -> None:
    spec = spec_of(schedule="0 * * * *", timeZone="Europe/Berlin")

    runs = upcoming(spec, "ns/t", datetime(2027, 10, 30, 22, 30, tzinfo=UTC), 4)

    # 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET: every real hour.
    assert [run.scheduled.hour for run in runs] == [23, 0, 1, 2]


def test_next_without_a_task_needs_no_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--kubeconfig", "/nonexistent", "next", "--schedule", "0 3 * * *", "-c", "2"])

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Schedule: At 03:00, UTC"
    assert out[1].split()[:4] == ["#", "SCHEDULED", "(UTC)", "LOCAL"]
    assert len(out) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "0 0 * * 5L"], "error: --schedule: the day-of-week field '5L'"),
        (["--schedule", "@daily", "--time-zone", ""], "error: --time-zone: must not be empty"),
        (["--every", "0s"], "error: --every: '0s' is shorter than the minimum of 1s"),
        (["--schedule", "@daily", "--every", "1m"], "error: next: give a task NAME, or exactly"),
        # Said before any connection: the flags alone are wrong.
        (["backup", "--schedule", "@daily"], "error: next: --schedule, --every and --time-zone"),
    ],
)
def test_next_without_a_task_names_the_bad_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--kubeconfig", "/nonexistent", "next", *argv])

    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith(message)
