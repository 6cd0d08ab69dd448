"""The operator against the real cluster: runs, names, status, policies, restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from taskmaster.core.times import rfc3339
from tests.support.operator import OperatorProcess
from tests.support.tasks import CONTAINER, Tasks, condition, job_template, phase
from tests.support.wait import until


def test_every_task_runs_on_time_with_the_contract_names(
    operator: OperatorProcess, tasks: Tasks, namespace: str
) -> None:
    recorder = tasks.recorder()
    created = tasks.create("tick", {"every": "2s", "task": CONTAINER})
    uid = created["metadata"]["uid"]

    seen = recorder.wait_for(3, "tick", timeout=20)
    recorder.close()

    anchor = datetime.fromisoformat(created["metadata"]["creationTimestamp"]).timestamp()
    for job in seen[:3]:
        assert (job.scheduled - anchor) % 2 == 0, job
        assert 0 <= job.seen_at - job.scheduled < 1.0, (
            f"{job.name} late by {job.seen_at - job.scheduled:.3f}s"
        )
        assert job.name == f"tick-{job.scheduled}"
        assert job.labels["taskmaster.dev/task"] == "tick"
        assert job.labels["taskmaster.dev/attempt"] == "1"
        assert job.labels["taskmaster.dev/trigger"] == "schedule"
    assert [b.scheduled - a.scheduled for a, b in pairwise(seen[:3])] == [2, 2]
    (job,) = [j for j in tasks.jobs("tick") if j.metadata.name == seen[0].name]
    (owner,) = job.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "ScheduledTask",
        "tick",
        uid,
        True,
    )
    scheduled_at = datetime.fromtimestamp(seen[0].scheduled, UTC)
    assert job.metadata.annotations["taskmaster.dev/scheduled-at"] == rfc3339(scheduled_at)

    task = tasks.wait("tick", lambda t: t.get("status", {}).get("succeededRuns", 0) >= 2)
    status = task["status"]
    assert status["history"][0]["result"] == "Succeeded"
    assert status["history"][0]["jobName"].startswith("tick-")
    assert status["lastScheduleTime"] >= rfc3339(scheduled_at)
    assert status["nextRunTime"] > status["lastScheduleTime"]
    assert status["observedGeneration"] == 1
    ready = condition(task, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    # Nothing of the operator's in the object but its status: GitOps sees no drift.
    assert task["metadata"]["generation"] == 1
    assert "finalizers" not in task["metadata"]
    assert set(task["metadata"].get("annotations") or {}) == set()
    tasks.wait_event(
        "tick",
        "JobCreated",
        f"created Job {seen[0].name} for the schedule run at {rfc3339(scheduled_at)}",
    )
    series = (
        f'taskmaster_runs_started_total{{namespace="{namespace}",task="tick",trigger="schedule"}}'
    )
    assert series in operator.metrics()


def test_cron_with_seconds_in_a_zone_fires_on_its_instants(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    tasks.create(
        "seconds", {"schedule": "*/3 * * * * *", "timeZone": "America/New_York", "task": CONTAINER}
    )

    seen = recorder.wait_for(2, "seconds")
    recorder.close()

    for job in seen[:2]:
        assert job.scheduled % 3 == 0
        assert 0 <= job.seen_at - job.scheduled < 1.0
    assert seen[1].scheduled - seen[0].scheduled == 3


def test_run_at_runs_exactly_once_then_completes(operator: OperatorProcess, tasks: Tasks) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    recorder = tasks.recorder()
    tasks.create("once", {"runAt": rfc3339(at), "task": CONTAINER})

    task = tasks.wait("once", lambda t: phase(t) == "Completed", timeout=20)

    (job,) = recorder.jobs("once")
    assert job.name == f"once-{int(at.timestamp())}"
    assert 0 <= job.seen_at - at.timestamp() < 1.0
    assert "nextRunTime" not in task["status"]
    assert condition(task, "Ready")["reason"] == "NoRunsLeft"
    recorder.close()
    assert len(tasks.jobs("once")) == 1


def test_forbid_skips_while_the_job_runs(operator: OperatorProcess, tasks: Tasks) -> None:
    tasks.create(
        "forbid",
        {"every": "1s", "concurrencyPolicy": "Forbid", "jobTemplate": job_template("1h")},
    )

    task = tasks.wait(
        "forbid",
        lambda t: (
            sum(e["result"] == "Skipped" for e in t.get("status", {}).get("history", [])) >= 2
        ),
    )

    assert len(tasks.jobs("forbid")) == 1
    assert len(task["status"]["active"]) == 1
    skipped = task["status"]["history"][0]
    assert skipped["reason"] == "ConcurrencyPolicyForbid"
    assert task["status"]["phase"] == "Running"


def test_replace_deletes_the_running_job(operator: OperatorProcess, tasks: Tasks) -> None:
    recorder = tasks.recorder()
    tasks.create(
        "replace",
        {"every": "2s", "concurrencyPolicy": "Replace", "jobTemplate": job_template("1h")},
    )

    task = tasks.wait(
        "replace",
        lambda t: any(e["result"] == "Replaced" for e in t.get("status", {}).get("history", [])),
        timeout=20,
    )

    first, second = recorder.wait_for(2, "replace")[:2]
    recorder.close()
    replaced = next(e for e in task["status"]["history"] if e["result"] == "Replaced")
    assert replaced["jobName"] == first.name
    assert [a["jobName"] for a in task["status"]["active"]] == [second.name]
    names = [
        job.metadata.name for job in tasks.jobs("replace") if not job.metadata.deletion_timestamp
    ]
    assert first.name not in names


def test_allow_runs_alongside(operator: OperatorProcess, tasks: Tasks) -> None:
    tasks.create("allow", {"every": "1s", "jobTemplate": job_template("1h")})

    task = tasks.wait("allow", lambda t: len(t.get("status", {}).get("active", [])) >= 3)

    assert condition(task, "Running")["status"] == "True"


def test_suspend_stops_new_runs_and_resume_does_not_catch_up(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    tasks.create("pausable", {"every": "1s", "task": CONTAINER})
    recorder.wait_for(1, "pausable")

    tasks.patch("pausable", {"spec": {"suspend": True}})
    suspended = tasks.wait("pausable", lambda t: phase(t) == "Suspended")
    count = len(recorder.jobs("pausable"))
    time.sleep(3)  # proving that nothing happens takes the time itself

    assert len(recorder.jobs("pausable")) == count
    assert condition(suspended, "Suspended")["status"] == "True"
    assert "nextRunTime" not in suspended["status"]
    resumed_at = time.time()
    tasks.patch("pausable", {"spec": {"suspend": False}})
    after = recorder.wait_for(count + 1, "pausable")
    recorder.close()
    assert all(job.scheduled >= int(resumed_at) for job in after[count:])


def test_run_now_runs_once_per_token(operator: OperatorProcess, tasks: Tasks) -> None:
    recorder = tasks.recorder()
    tasks.create("manual", {"every": "24h", "suspend": True, "task": CONTAINER})
    tasks.wait("manual", lambda t: phase(t) == "Suspended")

    tasks.patch("manual", {"metadata": {"annotations": {"taskmaster.dev/run-now": "first"}}})
    task = tasks.wait("manual", lambda t: t.get("status", {}).get("runNowToken") == "first")
    tasks.patch("manual", {"metadata": {"labels": {"touched": "yes"}}})
    tasks.patch("manual", {"metadata": {"annotations": {"taskmaster.dev/run-now": "second"}}})
    tasks.wait("manual", lambda t: t.get("status", {}).get("runNowToken") == "second")

    jobs = recorder.wait_for(2, "manual")
    recorder.close()
    assert [job.labels["taskmaster.dev/trigger"] for job in jobs] == ["manual", "manual"]
    assert len(tasks.jobs("manual")) == 2
    assert task["status"]["phase"] in ("Suspended", "Running")


def test_restart_never_duplicates_and_catches_up_by_policy(
    operators: Callable[..., OperatorProcess], tasks: Tasks
) -> None:
    # A killed leader cannot release its Lease: keep it short so the next one
    # takes over quickly.
    lease = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")
    first = operators(*lease).start()
    recorder = tasks.recorder()
    tasks.create(
        "catchup",
        {
            "every": "1s",
            "missedRunPolicy": "RunAll",
            "startingDeadlineSeconds": 30,
            "task": CONTAINER,
        },
    )
    tasks.create("skipper", {"every": "1s", "missedRunPolicy": "Skip", "task": CONTAINER})
    recorder.wait_for(2, "catchup")
    first.kill()
    stopped = time.time()
    time.sleep(3)  # the downtime itself: nothing to wait for but the clock
    second = operators(*lease).start()

    tasks.wait(
        "catchup",
        lambda t: (
            t["status"]["lastScheduleTime"] >= rfc3339(datetime.fromtimestamp(time.time() - 1, UTC))
        ),
    )
    tasks.wait("skipper", lambda t: t["status"].get("missedRuns", 0) >= 2)
    second.stop()
    recorder.close()

    catchup = recorder.jobs("catchup")
    times = [job.scheduled for job in catchup]
    assert len(times) == len(set(times)), "no duplicate run"
    assert times == list(range(times[0], times[-1] + 1)), "every second ran, missed ones caught up"
    assert any(job.labels["taskmaster.dev/trigger"] == "catch-up" for job in catchup)
    skipped_times = {job.scheduled for job in recorder.jobs("skipper")}
    assert not any(int(stopped) + 1 < t < int(stopped) + 3 for t in skipped_times)


def test_invalid_specs_that_get_in_are_reported_and_others_keep_running(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    tasks.create("healthy", {"every": "1s", "task": CONTAINER})
    tasks.create("bad-cron", {"schedule": "61 * * * *", "task": CONTAINER})
    tasks.create(
        "bad-zone", {"schedule": "0 * * * *", "timeZone": "Mars/Olympus", "task": CONTAINER}
    )

    cron = tasks.wait("bad-cron", lambda t: phase(t) == "Invalid")
    zone = tasks.wait("bad-zone", lambda t: phase(t) == "Invalid")

    assert condition(cron, "Ready")["message"].startswith(
        "spec.schedule: '61 * * * *' is not a valid cron"
    )
    assert condition(zone, "Ready")["message"].startswith(
        "spec.timeZone: 'Mars/Olympus' is not an IANA time zone"
    )
    tasks.wait_event("bad-cron", "InvalidSpec", condition(cron, "Ready")["message"])
    before = len(recorder.wait_for(1, "healthy"))
    recorder.wait_for(before + 2, "healthy")
    recorder.close()

    tasks.patch("bad-cron", {"spec": {"schedule": "* * * * * *"}})
    fixed = tasks.wait("bad-cron", lambda t: phase(t) in ("Scheduled", "Running"))
    assert condition(fixed, "Ready")["status"] == "True"
    assert fixed["status"]["observedGeneration"] == 2


def test_history_limits_delete_old_jobs_and_deleting_the_task_deletes_the_rest(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    tasks.create(
        "limited",
        {
            "every": "1s",
            "successfulJobsHistoryLimit": 2,
            "historyLimit": 4,
            "jobTemplate": job_template("10ms"),
        },
    )

    task = tasks.wait("limited", lambda t: t.get("status", {}).get("succeededRuns", 0) >= 5)

    assert len(task["status"]["history"]) == 4
    # Two succeeded Jobs kept, plus at most the one running now.
    until(
        lambda: len([j for j in tasks.jobs("limited") if not j.metadata.deletion_timestamp]) <= 3,
        timeout=10,
        message="old jobs deleted",
    )
    tasks.delete("limited")
    until(lambda: not tasks.jobs("limited"), timeout=30, message="jobs of the deleted task gone")


def test_a_253_character_name_gets_short_unique_job_names(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    name = "x" * 253
    recorder = tasks.recorder()
    tasks.create(name, {"every": "1s", "task": CONTAINER})

    (job, *_) = recorder.wait_for(1)
    recorder.close()

    assert len(job.name) <= 63
    assert job.name.startswith("x" * 30)
    assert len(job.labels["taskmaster.dev/task"]) <= 63
    task = tasks.wait(name, lambda t: t.get("status", {}).get("succeededRuns", 0) >= 1)
    assert job.name in [entry["jobName"] for entry in task["status"]["history"]]
