"""Failed runs: retries with backoff, timeouts, failure reasons in the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubernetes import client

from taskmaster.core.render import DISRUPTIONS_ARE_NOT_FAILURES
from taskmaster.core.times import rfc3339
from tests.support.operator import OperatorProcess
from tests.support.tasks import Tasks, condition, job_template, phase
from tests.support.wait import until


def test_a_failing_run_is_retried_with_backoff_then_fails(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    recorder = tasks.recorder()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    tasks.create(
        "flaky",
        {
            "runAt": rfc3339(at),
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
    assert history[1]["message"] == "exit code 3 (Error): disk full"
    # Each retry starts its backoff after the previous attempt ended (the
    # completion time has whole seconds, hence the one-second window).
    for job, delay in zip(attempts[1:], (2, 4), strict=True):
        previous = history[int(job.labels["taskmaster.dev/attempt"]) - 1]
        ended = datetime.fromisoformat(previous["completionTime"]).timestamp()
        assert 0 <= job.seen_at - ended - delay < 1.0, (job.name, job.seen_at - ended)
    assert task["status"]["failedRuns"] == 3
    degraded = condition(task, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RunFailed")
    tasks.wait_event("flaky", "RunFailed")


def test_a_run_over_its_timeout_ends_timed_out(operator: OperatorProcess, tasks: Tasks) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    tasks.create(
        "slow", {"runAt": rfc3339(at), "timeoutSeconds": 2, "jobTemplate": job_template("1h")}
    )

    task = tasks.wait("slow", lambda t: phase(t) == "Failed", timeout=30)

    (entry,) = task["status"]["history"]
    assert (entry["result"], entry["reason"]) == ("TimedOut", "DeadlineExceeded")
    (job,) = tasks.jobs("slow")
    assert job.spec.active_deadline_seconds == 2
    assert condition(task, "Degraded")["reason"] == "RunTimedOut"


def test_a_disrupted_pod_is_replaced_without_failing_the_run(
    operator: OperatorProcess, tasks: Tasks, core_v1: client.CoreV1Api
) -> None:
    # The pod failure policy task.container and task.http Jobs get, on a Job
    # whose simulated pod runs long enough to be evicted.
    template = job_template("1h")
    template["spec"]["podFailurePolicy"] = DISRUPTIONS_ARE_NOT_FAILURES
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    tasks.create("evicted", {"runAt": rfc3339(at), "jobTemplate": template})
    tasks.wait("evicted", lambda t: bool(t.get("status", {}).get("active")))
    (job,) = tasks.jobs("evicted")
    pod = until(
        lambda: (
            core_v1.list_namespaced_pod(
                tasks.namespace, label_selector=f"job-name={job.metadata.name}"
            ).items
        ),
        timeout=30,
        message="the run's pod",
    )[0]

    core_v1.create_namespaced_pod_eviction(
        pod.metadata.name,
        tasks.namespace,
        client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=tasks.namespace)
        ),
    )

    replacement = until(
        lambda: [
            p
            for p in core_v1.list_namespaced_pod(
                tasks.namespace, label_selector=f"job-name={job.metadata.name}"
            ).items
            if p.metadata.name != pod.metadata.name
        ],
        timeout=60,
        message="a replacement pod",
    )
    assert replacement
    task = tasks.get("evicted")
    assert task["status"]["failedRuns"] == 0
    assert [a["jobName"] for a in task["status"]["active"]] == [job.metadata.name]
