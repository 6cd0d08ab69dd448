"""The operator's client limits against the real API server: the cap on runs in flight
(--max-active-runs) and the client's rate limit (--kube-api-qps, --kube-api-burst)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from taskmaster.core.times import rfc3339
from tests.support.operator import OperatorProcess
from tests.support.tasks import Tasks, history, job_template
from tests.support.wait import until


def samples(operator: OperatorProcess) -> dict[str, float]:
    """The operator's metric samples, by name and labels as Prometheus prints them."""
    found = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def test_runs_over_the_cap_wait_then_start_oldest_first_or_are_missed_past_their_deadline(
    operators: Callable[..., OperatorProcess], tasks: Tasks
) -> None:
    operator = operators("--max-active-runs=1").start()
    recorder = tasks.recorder()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    # One slot: `first` takes it for 8 s; `waits` and `gives-up` fall due a second later.
    tasks.create("first", {"runAt": rfc3339(at), "jobTemplate": job_template("8s")})
    later = rfc3339(at + timedelta(seconds=1))
    tasks.create("waits", {"runAt": later, "jobTemplate": job_template()})
    tasks.create(
        "gives-up", {"runAt": later, "startingDeadlineSeconds": 3, "jobTemplate": job_template()}
    )

    for name in ("waits", "gives-up"):
        _, note = tasks.wait_event(name, "WaitingForSlot", timeout=30)
        assert "--max-active-runs is 1" in note
    until(
        lambda: samples(operator).get("taskmaster_tasks_waiting_for_slot") == 2,
        timeout=10,
        message="two tasks waiting for a slot",
    )
    metrics = samples(operator)
    assert metrics["taskmaster_runs_in_flight"] == 1
    assert metrics["taskmaster_max_active_runs"] == 1

    # Past its 3 s deadline: Missed, saying why.
    missed = tasks.wait(
        "gives-up", lambda task: any(e["result"] == "Missed" for e in history(task)), timeout=30
    )
    [entry] = history(missed)
    assert entry["reason"] == "MaxActiveRuns"
    assert "startingDeadlineSeconds (3s)" in entry["message"]
    assert "--max-active-runs" in entry["message"]

    # `first` ends: its slot goes to `waits`, late but as scheduled.
    [waited] = recorder.wait_for(1, "waits", timeout=30)
    [held] = tasks.jobs("first")
    assert held.status.completion_time is not None
    assert waited.seen_at >= held.status.completion_time.timestamp()
    assert waited.labels["taskmaster.dev/trigger"] == "schedule"
    done = tasks.wait("waits", lambda task: bool(history(task)), timeout=30)
    assert history(done)[0]["result"] == "Succeeded"
    assert tasks.jobs("gives-up") == []
    recorder.close()


def test_the_client_rate_limit_spaces_the_operators_requests(
    operators: Callable[..., OperatorProcess], tasks: Tasks
) -> None:
    operator = operators("--kube-api-qps=2", "--kube-api-burst=1").start()
    recorder = tasks.recorder()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    for i in range(6):
        tasks.create(f"t{i}", {"runAt": rfc3339(at), "jobTemplate": job_template()})

    jobs = recorder.wait_for(6, timeout=60)
    recorder.close()
    seen = sorted(job.seen_at for job in jobs)
    # Six creates at two a second (besides the status writes and Events): at least 2.5 s.
    assert seen[-1] - seen[0] >= 2.0, seen
    metrics = samples(operator)
    assert metrics['taskmaster_kube_api_wait_seconds_count{client="operator"}'] > 6
    assert metrics['taskmaster_kube_api_wait_seconds_sum{client="operator"}'] > 2.0
    assert 'taskmaster_kube_api_wait_seconds_count{client="leader-election"}' in metrics
