"""Failed runs: retries with backoff, timeouts, failure reasons in the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.operator import OperatorProcess
from tests.support.tasks import Tasks, condition, job_template, phase


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_failing_run_is_retried_with_backoff_then_fails(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    tasks.create(
        "flaky",
        {
            "runAt": iso(at),
            "retry": {"limit": 2, "backoff": {"initialSeconds": 2, "factor": 2}},
            "failedJobsHistoryLimit": 3,
            "jobTemplate": job_template(exit_code=3, message="disk full"),
        },
    )

    task = tasks.wait("flaky", lambda t: phase(t) == "Failed", timeout=40)
    recorder.close()

    attempts = recorder.jobs("flaky")
    assert [job.labels["taskmaster.dev/attempt"] for job in attempts] == ["1", "2", "3"]
    assert [job.labels["taskmaster.dev/trigger"] for job in attempts] == [
        "schedule",
        "retry",
        "retry",
    ]
    assert [job.name for job in attempts] == [
        f"flaky-{int(at.timestamp())}",
        f"flaky-{int(at.timestamp())}-2",
        f"flaky-{int(at.timestamp())}-3",
    ]
    history = {entry["attempt"]: entry for entry in task["status"]["history"]}
    assert sorted(history) == [1, 2, 3]
    assert all(entry["result"] == "Failed" for entry in history.values())
    assert history[1]["reason"] == "BackoffLimitExceeded"
    # Each retry starts its backoff after the previous attempt ended (the
    # completion time has whole seconds, hence the one-second window).
    for job, delay in zip(attempts[1:], (2, 4), strict=True):
        previous = history[int(job.labels["taskmaster.dev/attempt"]) - 1]
        ended = datetime.fromisoformat(previous["completionTime"]).timestamp()
        assert 0 <= job.seen_at - ended - delay < 1.0, (job.name, job.seen_at - ended)
    assert task["status"]["failedRuns"] == 3
    degraded = condition(task, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RunFailed")
    assert any(reason == "RunFailed" for reason, _ in tasks.events("flaky"))


def test_a_run_over_its_timeout_ends_timed_out(operator: OperatorProcess, tasks: Tasks) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    tasks.create("slow", {"runAt": iso(at), "timeoutSeconds": 2, "jobTemplate": job_template("1h")})

    task = tasks.wait("slow", lambda t: phase(t) == "Failed", timeout=30)

    (entry,) = task["status"]["history"]
    assert (entry["result"], entry["reason"]) == ("TimedOut", "DeadlineExceeded")
    (job,) = tasks.jobs("slow")
    assert job.spec.active_deadline_seconds == 2
    assert condition(task, "Degraded")["reason"] == "RunTimedOut"
