"""Schedules, round 2, as a user sees them on the real cluster: the preview across a
DST change, several schedules on one task, stop after failures, the run's own
environment, and backfill (with a failover in the middle of one)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from kubernetes import client

from taskmaster.core.times import rfc3339
from tests.support.ha import LeaseHolders, pair
from tests.support.operator import OperatorProcess
from tests.support.plugin import User, ok, table
from tests.support.tasks import Tasks, condition, job_template, phase
from tests.support.wait import until

BERLIN_FALL_BACK_2027 = datetime(2027, 10, 31, 1, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET


def preview(output: str) -> tuple[str, list[dict[str, str]]]:
    """`next`'s output: its `Schedule:` line, and its table."""
    words, rest = output.split("\n", 1)
    return words.removeprefix("Schedule: "), table(rest)


def test_next_lists_both_passes_of_a_repeated_hour_and_agrees_with_the_status(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    start = BERLIN_FALL_BACK_2027 - timedelta(minutes=40)  # 02:20 CEST
    spec = {
        "schedule": "*/15 * * * *",
        "timeZone": "Europe/Berlin",
        "startAt": rfc3339(start),
        "jobTemplate": job_template(),
    }
    tasks.create("quarter", spec)
    task = tasks.wait("quarter", lambda t: bool(t.get("status", {}).get("nextRunTime")))

    words, rows = preview(ok(user.kubectl("next", "quarter", "-c", "8")))

    assert words == f"Every 15 minutes, Europe/Berlin, from {rfc3339(start)}"
    assert [row["SCHEDULED (UTC)"] for row in rows] == [
        f"2027-10-31T{hour:02}:{minute:02}:00Z" for hour in (0, 1, 2) for minute in (0, 15, 30, 45)
    ][2:10]
    assert [row["LOCAL TIME (Europe/Berlin)"][11:] for row in rows] == [
        "02:30:00 CEST",
        "02:45:00 CEST",
        "02:00:00 CET",  # the repeated hour again: real time goes on
        "02:15:00 CET",
        "02:30:00 CET",
        "02:45:00 CET",
        "03:00:00 CET",
        "03:15:00 CET",
    ]
    assert task["status"]["nextRunTime"] == rows[0]["SCHEDULED (UTC)"]
    scripted = json.loads(ok(user.plugin("next", "quarter", "-c", "2", "-o", "json")))
    assert [entry["scheduledTime"] for entry in scripted] == [
        row["SCHEDULED (UTC)"] for row in rows[:2]
    ]


def test_next_previews_a_schedule_without_a_task(crds: list[str], user: User) -> None:
    words, rows = preview(
        ok(user.kubectl("next", "--schedule", "0 9 * * MON-FRI", "--time-zone", "Europe/Paris"))
    )

    assert words == "At 09:00, Monday through Friday, Europe/Paris"
    assert len(rows) == 10
    local = [
        datetime.strptime(row["LOCAL TIME (Europe/Paris)"][:19], "%Y-%m-%d %H:%M:%S")
        for row in rows
    ]
    assert all(t.hour == 9 and t.minute == 0 and t.weekday() < 5 for t in local)
    refused = user.kubectl("next", "--schedule", "0 9 * * 5L")
    assert refused.code == 1
    assert refused.err.startswith("error: --schedule: the day-of-week field '5L'")


def test_several_schedules_run_at_the_union_of_their_times_once_per_instant(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    spec = {
        "schedules": [{"schedule": "*/2 * * * * *"}, {"schedule": "*/3 * * * * *"}],
        "successfulJobsHistoryLimit": 100,
        "jobTemplate": job_template("100ms"),
    }
    tasks.create("union", spec)

    first = recorder.wait_for(1, "union")[0].scheduled
    window = range(first - first % 6 + 6, first - first % 6 + 18)  # two whole cycles of 6 s
    until(
        lambda: any(job.scheduled >= window[-1] for job in recorder.jobs("union")),
        timeout=40,
        message="the union's jobs over two cycles",
    )
    recorder.close()
    seen = Counter(job.scheduled for job in recorder.jobs("union"))

    assert sorted(t for t in seen if t in window) == [t for t in window if t % 2 == 0 or t % 3 == 0]
    assert max(seen.values()) == 1, "an instant both schedules share ran once"


def test_consecutive_failures_stop_the_task_until_it_is_resumed(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    recorder = tasks.recorder()
    spec = {
        "every": "3s",
        "stopAfterConsecutiveFailures": 2,
        "failedJobsHistoryLimit": 10,
        "jobTemplate": job_template("100ms", exit_code=1, message="down"),
    }
    tasks.create("flaky", spec)

    stopped = tasks.wait("flaky", lambda t: phase(t) == "Stopped", timeout=40)
    ready = condition(stopped, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StoppedAfterFailures")
    assert ready["message"].startswith("stopped after 2 consecutive failed runs")
    assert stopped["status"]["consecutiveFailures"] == 2
    assert "nextRunTime" not in stopped["status"]
    tasks.wait_event("flaky", "Stopped", ready["message"])
    time.sleep(7)  # the stop itself: two periods of the schedule pass
    assert len(recorder.jobs("flaky")) == 2, "no run while stopped"

    ok(user.kubectl("resume", "flaky"))
    resumed_at = int(time.time())
    resumed = tasks.wait("flaky", lambda t: phase(t) != "Stopped")
    assert (
        resumed["status"]["resumeToken"]
        == (resumed["metadata"]["annotations"]["taskmaster.dev/resume"])
    )
    later = recorder.wait_for(3, "flaky")[2]
    recorder.close()
    assert later.scheduled >= resumed_at - 1, "times passed while stopped are not run"
    assert later.labels["taskmaster.dev/trigger"] == "schedule"
    # Still failing: it stops again after two more.
    tasks.wait("flaky", lambda t: phase(t) == "Stopped", timeout=40)


def test_every_container_of_a_run_knows_its_scheduled_time_attempt_and_trigger(
    operator: OperatorProcess, tasks: Tasks, core_v1: client.CoreV1Api, namespace: str
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    template = job_template("5s")
    main = template["spec"]["template"]["spec"]["containers"][0]
    main["env"] = [{"name": "TASKMASTER_TRIGGER", "value": "kept"}]
    template["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "x:1"})
    tasks.create("env", {"runAt": rfc3339(at), "jobTemplate": template})

    until(lambda: tasks.jobs("env"), timeout=30, message="the run's Job")
    pod = until(
        lambda: next(
            iter(core_v1.list_namespaced_pod(namespace, label_selector="job-name").items), None
        ),
        timeout=30,
        message="the run's pod",
    )

    variables = {
        container.name: {
            e.name: e.value_from.field_ref.field_path if e.value_from else e.value
            for e in container.env
        }
        for container in pod.spec.containers
    }
    assert variables["side"] == {
        "TASKMASTER_SCHEDULED_TIME": "metadata.annotations['taskmaster.dev/scheduled-at']",
        "TASKMASTER_ATTEMPT": "metadata.labels['taskmaster.dev/attempt']",
        "TASKMASTER_TRIGGER": "metadata.labels['taskmaster.dev/trigger']",
    }
    assert variables["main"]["TASKMASTER_TRIGGER"] == "kept"  # the template's own wins
    assert variables["main"]["TASKMASTER_ATTEMPT"] == "metadata.labels['taskmaster.dev/attempt']"
    # What the fields resolve to, on the pod itself.
    assert pod.metadata.annotations["taskmaster.dev/scheduled-at"] == rfc3339(at)
    assert pod.metadata.labels["taskmaster.dev/attempt"] == "1"
    assert pod.metadata.labels["taskmaster.dev/trigger"] == "schedule"


def days_ago(days: int, hour: int = 0) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days) + timedelta(hours=hour)


def test_backfill_runs_each_past_time_once_oldest_first_one_at_a_time_under_forbid(
    operator: OperatorProcess, tasks: Tasks, user: User
) -> None:
    recorder = tasks.recorder()
    spec = {
        "schedule": "0 2 * * *",
        "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 10,
        "jobTemplate": job_template("500ms"),
    }
    tasks.create("nightly", spec)
    start, end = days_ago(4), days_ago(1)

    said = ok(user.kubectl("backfill", "nightly", "--from", rfc3339(start), "--to", rfc3339(end)))

    assert said.startswith("scheduledtasks.taskmaster.dev/nightly backfill requested (token ")
    assert said.rstrip().endswith(f"3 runs from {rfc3339(start)} to {rfc3339(end)}, oldest first")
    done = tasks.wait(
        "nightly",
        lambda t: (
            len([e for e in t.get("status", {}).get("history", []) if e["trigger"] == "backfill"])
            == 3
        ),
        timeout=60,
    )
    recorder.close()
    expected = [int(days_ago(d, 2).timestamp()) for d in (4, 3, 2)]
    jobs = recorder.jobs("nightly")
    assert sorted(job.scheduled for job in jobs) == expected
    assert all(job.labels["taskmaster.dev/trigger"] == "backfill" for job in jobs)
    assert len({job.name for job in jobs}) == 3
    assert all(job.name.startswith("nightly-b") for job in jobs)
    entries = sorted(
        (e for e in done["status"]["history"] if e["trigger"] == "backfill"),
        key=lambda e: e["scheduledTime"],
    )
    assert [e["result"] for e in entries] == ["Succeeded"] * 3
    for earlier, later in pairwise(entries):
        assert later["startTime"] >= earlier["completionTime"], "Forbid: one at a time"
    backfill = done["status"]["backfill"]
    assert (backfill["state"], backfill["runs"], backfill["started"]) == ("Completed", 3, 3)
    tasks.wait_event("nightly", "BackfillStarted")
    tasks.wait_event("nightly", "BackfillCompleted")

    refused = user.kubectl(
        "backfill", "nightly", "--from", "2020-01-01T00:00:00Z", "--to", rfc3339(end)
    )
    assert refused.code == 1
    assert "runs, more than the 1000 one backfill may create" in refused.err


def test_a_backfill_over_the_bound_is_refused_by_the_operator_with_its_count(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    request = {"token": "too-many", "from": rfc3339(days_ago(2)), "to": rfc3339(days_ago(1))}
    annotations = {"taskmaster.dev/backfill": json.dumps(request)}
    tasks.create("minutely", {"every": "1m", "jobTemplate": job_template()}, annotations)

    task = tasks.wait(
        "minutely", lambda t: t.get("status", {}).get("backfill", {}).get("state") == "Refused"
    )

    message = task["status"]["backfill"]["message"]
    # A day of minutes, anchored at the creation: both ends are times only at :00.
    created = datetime.fromisoformat(task["metadata"]["creationTimestamp"])
    runs = 1441 if created.second == 0 else 1440
    assert message.startswith(f"the range holds {runs} runs, more than the 1000")
    tasks.wait_event("minutely", "BackfillRefused", f"backfill too-many: {message}")
    assert [
        j
        for j in tasks.jobs("minutely")
        if j.metadata.labels["taskmaster.dev/trigger"] == "backfill"
    ] == []


def test_a_failover_in_the_middle_of_a_backfill_runs_every_time_once(
    operators: Callable[..., OperatorProcess], tasks: Tasks, holders: LeaseHolders, user: User
) -> None:
    leader, standby, _, standby_id = pair(operators, holders)
    recorder = tasks.recorder()
    spec = {
        "schedule": "* * * * *",
        "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 30,
        "historyLimit": 30,
        "jobTemplate": job_template("300ms"),
    }
    tasks.create("minutes", spec)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(minutes=40), now - timedelta(minutes=21)  # 20 runs
    ok(user.kubectl("backfill", "minutes", "--from", rfc3339(start), "--to", rfc3339(end)))

    recorder.wait_for(5, "minutes", timeout=30)
    leader.kill()
    holders.taken_by(standby_id)
    done = tasks.wait(
        "minutes",
        lambda t: t.get("status", {}).get("backfill", {}).get("state") == "Completed",
        timeout=90,
    )
    standby.stop()
    recorder.close()

    expected = [int((start + timedelta(minutes=m)).timestamp()) for m in range(20)]
    backfilled = [
        job
        for job in recorder.jobs("minutes")
        if job.labels["taskmaster.dev/trigger"] == "backfill"
    ]
    seen = Counter(job.scheduled for job in backfilled)
    assert sorted(seen) == expected, "no gap"
    assert max(seen.values()) == 1, "no duplicate"
    assert done["status"]["backfill"]["started"] == 20
