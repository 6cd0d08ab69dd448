"""Status reduction: Jobs and decisions to history, counters, conditions and phase."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmaster.core.names import Run, Trigger
from taskmaster.core.spec import InvalidSpec, parse_spec
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    PodOutcome,
    Result,
    count_failures,
    expired_jobs,
    failure_streak,
    read_previous,
    reduce_status,
    same_status,
    says_stopped,
)

CREATED = datetime(2026, 5, 1, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return CREATED + timedelta(seconds=seconds)


def spec_of(**fields: Any) -> Any:
    raw = {"every": "10s", "task": {"container": {"image": "busybox"}}, **fields}
    return parse_spec(raw, namespace="ns", name="t", created=CREATED)


def job(
    scheduled: float,
    condition: str | None = None,
    reason: str = "",
    message: str = "",
    trigger: str = "schedule",
) -> dict[str, Any]:
    conditions = []
    if condition:
        conditions.append(
            {
                "type": condition,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2026-05-01T12:00:30Z",
            }
        )
    return {
        "metadata": {
            "name": f"t-{int(at(scheduled).timestamp())}",
            "labels": {
                "taskmaster.dev/scheduled-time": str(int(at(scheduled).timestamp())),
                "taskmaster.dev/attempt": "1",
                "taskmaster.dev/trigger": trigger,
            },
        },
        "status": {"startTime": "2026-05-01T12:00:11Z", "conditions": conditions},
    }


def view(*args: Any, **kwargs: Any) -> JobView:
    parsed = JobView.from_job(job(*args, **kwargs))
    assert parsed is not None
    return parsed


def observe(jobs: list[JobView], **fields: Any) -> Observation:
    fields.setdefault("spec", spec_of())
    fields.setdefault("now", at(40))
    fields.setdefault("generation", 2)
    fields.setdefault("next_run_time", at(50))
    return Observation(jobs=jobs, **fields)


def test_job_views_read_results_from_conditions() -> None:
    assert view(10).active
    assert view(10, "Complete").result is Result.SUCCEEDED
    timed_out = view(10, "Failed", "DeadlineExceeded", "Job was active longer than specified")
    assert (timed_out.result, timed_out.reason) == (Result.TIMED_OUT, "DeadlineExceeded")
    failed = view(10, "Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")
    assert (failed.result, failed.message) == (Result.FAILED, "Job has reached the backoff limit")
    assert failed.completion_time == datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    assert view(10, trigger="catch-up").run == Run(at(10), 1, Trigger.CATCH_UP)


def test_jobs_without_run_labels_are_not_ours() -> None:
    assert JobView.from_job({"metadata": {"name": "x", "labels": {}}}) is None
    bad = job(10)
    bad["metadata"]["labels"]["taskmaster.dev/scheduled-time"] = "soon"
    assert JobView.from_job(bad) is None


def test_a_finished_job_is_recorded_once() -> None:
    jobs = [view(10, "Complete"), view(20)]

    first = reduce_status({}, observe(jobs, last_schedule_time=at(20)))
    second = reduce_status(first.status, observe(jobs, last_schedule_time=at(20)))

    assert [e.result for e in first.recorded] == [Result.SUCCEEDED]
    assert second.recorded == []
    status = second.status
    assert status["succeededRuns"] == 1
    assert status["failedRuns"] == 0
    assert status["lastSuccessfulTime"] == "2026-05-01T12:00:30Z"
    assert status["lastScheduleTime"] == "2026-05-01T12:00:20Z"
    assert status["nextRunTime"] == "2026-05-01T12:00:50Z"
    assert status["active"] == [
        {"jobName": "t-1777636820", "scheduledTime": "2026-05-01T12:00:20Z", "attempt": 1}
    ]
    assert status["history"] == [
        {
            "scheduledTime": "2026-05-01T12:00:10Z",
            "jobName": "t-1777636810",
            "attempt": 1,
            "trigger": "schedule",
            "startTime": "2026-05-01T12:00:11Z",
            "completionTime": "2026-05-01T12:00:30Z",
            "result": "Succeeded",
        }
    ]
    assert status["phase"] == "Running"
    assert same_status(first.status, second.status)


def test_history_is_newest_first_and_capped() -> None:
    jobs = [view(s, "Complete") for s in (10, 20, 30, 40)]

    status = reduce_status({}, observe(jobs, spec=spec_of(historyLimit=3))).status

    assert [e["scheduledTime"][-3:-1] for e in status["history"]] == ["40", "30", "20"]
    assert status["succeededRuns"] == 4


def test_missed_and_skipped_records_count_and_show() -> None:
    records = [
        HistoryEntry(at(10), Result.MISSED, reason="MissedStartingDeadline", message="m", runs=7),
        HistoryEntry(at(20), Result.SKIPPED, reason="ConcurrencyPolicyForbid", message="s"),
    ]

    update = reduce_status({"missedRuns": 2}, observe([], records=records))

    assert update.status["missedRuns"] == 9
    assert [e["result"] for e in update.status["history"]] == ["Skipped", "Missed"]
    assert update.status["conditions"][3]["type"] == "Degraded"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = reduce_status({}, observe([], now=at(40))).status
    later = reduce_status(first, observe([], now=at(90))).status
    suspended = reduce_status(later, observe([], now=at(95), spec=spec_of(suspend=True))).status

    ready = {c["type"]: c for c in later["conditions"]}["Ready"]
    assert ready["status"] == "True"
    assert ready["lastTransitionTime"] == "2026-05-01T12:00:40Z"
    assert ready["observedGeneration"] == 2
    assert ready["message"] == "next run at 2026-05-01T12:00:50Z"
    by_type = {c["type"]: c for c in suspended["conditions"]}
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Ready"]["lastTransitionTime"] == "2026-05-01T12:01:35Z"
    assert by_type["Suspended"]["status"] == "True"
    assert suspended["phase"] == "Suspended"


def test_degraded_follows_the_last_finished_run() -> None:
    failed = reduce_status(
        {}, observe([view(10, "Failed", "BackoffLimitExceeded", "exit code 3")])
    ).status
    recovered = reduce_status(failed, observe([view(10, "Failed"), view(20, "Complete")])).status

    degraded = {c["type"]: c for c in failed["conditions"]}["Degraded"]
    assert (degraded["status"], degraded["reason"], degraded["message"]) == (
        "True",
        "RunFailed",
        "exit code 3",
    )
    assert failed["failedRuns"] == 1
    assert failed["lastFailureTime"] == "2026-05-01T12:00:30Z"
    assert {c["type"]: c for c in recovered["conditions"]}["Degraded"]["status"] == "False"


@pytest.mark.parametrize(
    ("jobs", "fields", "phase"),
    [
        ([], {}, "Scheduled"),
        ([view(10)], {}, "Running"),
        ([view(10, "Complete")], {"next_run_time": None}, "Completed"),
        ([view(10, "Failed")], {"next_run_time": None}, "Completed"),
        (
            [view(10, "Failed")],
            {"next_run_time": None, "spec": spec_of(every=None, runAt="2026-05-01T12:00:10Z")},
            "Failed",
        ),
        ([], {"spec": None, "invalid": InvalidSpec([])}, "Invalid"),
    ],
)
def test_phase(jobs: list[JobView], fields: dict[str, Any], phase: str) -> None:
    assert reduce_status({}, observe(jobs, **fields)).status["phase"] == phase


def test_invalid_spec_shows_the_message() -> None:
    spec = {"every": "10s", "schedule": "* * * * *"}
    with pytest.raises(InvalidSpec) as invalid:
        parse_spec(spec, namespace="ns", name="t", created=CREATED)

    status = reduce_status({}, observe([], spec=None, invalid=invalid.value)).status

    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert "spec: exactly one of schedule, schedules, runAt, every" in ready["message"]


def test_an_invalid_spec_keeps_the_schedule_cursor_and_the_handled_run_now_token() -> None:
    previous = {"lastScheduleTime": "2026-05-01T12:00:00Z", "runNowToken": "once"}
    with pytest.raises(InvalidSpec) as invalid:
        parse_spec({"every": "0s"}, namespace="ns", name="t", created=CREATED)

    status = reduce_status(previous, observe([], spec=None, invalid=invalid.value)).status

    assert status["lastScheduleTime"] == "2026-05-01T12:00:00Z"
    assert status["runNowToken"] == "once"


def test_expired_jobs_respect_both_limits_and_the_history() -> None:
    spec = spec_of(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    jobs = [view(s, "Complete") for s in (10, 20, 30)] + [view(s, "Failed") for s in (40, 50)]
    jobs.append(view(60))
    status = reduce_status({}, observe(jobs, spec=spec)).status

    expired = expired_jobs(jobs, spec, status["history"])

    assert sorted(expired) == ["t-1777636810", "t-1777636840"]
    trimmed = [e for e in status["history"] if e["jobName"] != "t-1777636830"]
    assert "t-1777636830" in expired_jobs(jobs, spec, trimmed)


def pod(
    exit_code: int | None, reason: str = "", message: str = "", disrupted: bool = False
) -> dict[str, Any]:
    status: dict[str, Any] = {"containerStatuses": []}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "reason": reason, "message": message}
        status["containerStatuses"].append({"name": "main", "state": {"terminated": terminated}})
    if disrupted:
        status["conditions"] = [
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
             "message": "Eviction API: evicting"}
        ]  # fmt: skip
    return {"status": status}


def test_pod_outcomes_explain_the_run() -> None:
    failed = PodOutcome.from_pod(pod(3, "Error", "disk full\n"))
    oom = PodOutcome.from_pod(pod(137, "OOMKilled"))
    evicted = PodOutcome.from_pod(pod(None, disrupted=True))

    assert failed is not None
    assert failed.describe() == "exit code 3 (Error): disk full"
    assert oom is not None
    assert oom.describe() == "exit code 137 (OOMKilled)"
    assert evicted is not None
    assert evicted.describe() == "disrupted (EvictionByEvictionAPI: Eviction API: evicting)"
    assert PodOutcome.from_pod(pod(None)) is None


def test_the_pod_s_story_becomes_the_history_message() -> None:
    failed = view(10, "Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")
    succeeded = view(10, "Complete", "CompletionsReached", "Reached expected number")

    assert failed.with_pod(PodOutcome.from_pod(pod(3, "Error", "disk full"))).message == (
        "exit code 3 (Error): disk full"
    )
    assert succeeded.with_pod(
        PodOutcome.from_pod(pod(0, "Completed", '{"status": 200}'))
    ).message == ('{"status": 200}')
    assert succeeded.with_pod(PodOutcome.from_pod(pod(0, "Completed"))).message == ""
    assert view(10).with_pod(PodOutcome.from_pod(pod(3))) == view(10)


def failed(scheduled: float, attempt: int = 1) -> JobView:
    return JobView(
        name=f"t-{int(at(scheduled).timestamp())}",
        run=Run(at(scheduled), attempt),
        completion_time=at(scheduled + 1),
        result=Result.FAILED,
    )


def test_consecutive_failed_runs_stop_the_task_with_phase_condition_and_count() -> None:
    spec = spec_of(stopAfterConsecutiveFailures=2)
    first = reduce_status({}, observe([failed(10)], spec=spec, generation=1)).status
    assert (first["phase"], first["consecutiveFailures"]) == ("Scheduled", 1)

    second = reduce_status(first, observe([failed(10), failed(20)], spec=spec, generation=1))

    status = second.status
    assert (status["phase"], status["consecutiveFailures"]) == ("Stopped", 2)
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "StoppedAfterFailures")
    assert "stopped after 2 consecutive failed runs" in ready["message"]
    assert "taskmaster.dev/resume" in ready["message"]


def test_a_success_resets_the_count_and_a_retried_failure_counts_once() -> None:
    spec = spec_of(stopAfterConsecutiveFailures=3, retry={"limit": 1})
    succeeded = replace(failed(30), result=Result.SUCCEEDED)
    jobs = [failed(10), failed(20), replace(failed(20, 2), name="t-x-2"), succeeded]

    status = reduce_status({}, observe(jobs, spec=spec, generation=1)).status

    assert "consecutiveFailures" not in status or status["consecutiveFailures"] is None
    # Only the run at 20 failed for good (its second attempt); 10's retry is to come.
    before_success = reduce_status({}, observe(jobs[:3], spec=spec, generation=1)).status
    assert before_success["consecutiveFailures"] == 1


def test_a_spec_change_or_a_new_resume_token_resets_the_count() -> None:
    previous = {"observedGeneration": 1, "consecutiveFailures": 3, "resumeToken": "a"}

    assert failure_streak(previous, generation=1, resume_token="a") == 3
    assert failure_streak(previous, generation=2, resume_token="a") == 0
    assert failure_streak(previous, generation=1, resume_token="b") == 0
    assert failure_streak(previous, generation=1, resume_token=None) == 3


def test_a_stop_is_read_from_the_ready_condition_whatever_the_phase() -> None:
    spec = spec_of(stopAfterConsecutiveFailures=1)
    manual = JobView("t-m1", Run(at(30), trigger=Trigger.MANUAL, token="m"))
    status = reduce_status({}, observe([failed(10), manual], spec=spec, generation=1)).status

    assert status["phase"] == "Running"
    assert says_stopped(status)
    assert not says_stopped({"phase": "Stopped"})


def test_failures_count_in_the_order_runs_end_and_a_refused_job_counts() -> None:
    spec = spec_of(stopAfterConsecutiveFailures=1, retry={"limit": 2})
    early_success = replace(failed(20), name="t-b", result=Result.SUCCEEDED, completion_time=at(21))
    late_failure = replace(failed(10, attempt=3), name="t-a-3", completion_time=at(35))
    refused = HistoryEntry(at(40), Result.FAILED, reason="JobCreateFailed")

    # Listed by scheduled time, the failure (scheduled 10) before the success (20);
    # it ended last, so it is the one that counts.
    assert count_failures(0, [entry(late_failure), entry(early_success)], spec) == 1
    assert count_failures(0, [refused], spec) == 1


def entry(job: JobView) -> HistoryEntry:
    assert job.result is not None
    return HistoryEntry.from_job(job, job.result)


def test_a_job_recorded_since_the_last_write_is_not_recorded_again() -> None:
    spec = spec_of(historyLimit=0, stopAfterConsecutiveFailures=2)
    first = reduce_status({}, observe([failed(10)], spec=spec, generation=1))
    assert first.status["consecutiveFailures"] == 1

    again = reduce_status(
        first.status,
        observe([failed(10)], spec=spec, generation=1, recorded_jobs=frozenset({failed(10).name})),
    )

    assert again.recorded == []
    assert again.status["consecutiveFailures"] == 1
    assert again.status["failedRuns"] == 1


def test_a_one_time_task_that_failed_is_failed_not_stopped() -> None:
    spec = spec_of(every=None, runAt="2026-05-01T12:00:10Z", stopAfterConsecutiveFailures=1)

    status = reduce_status({}, observe([failed(10)], spec=spec, next_run_time=None)).status

    assert status["phase"] == "Failed"
    assert not says_stopped(status)


def test_a_failed_token_run_waiting_for_its_retry_keeps_its_job() -> None:
    spec = spec_of(retry={"limit": 1}, failedJobsHistoryLimit=0)
    run = Run(at(-86400), trigger=Trigger.BACKFILL, token="b", backfill=True)
    waiting = JobView("t-b1", run, result=Result.FAILED, completion_time=at(1))
    retried = JobView("t-b2", replace(run, scheduled=at(-80000)), result=Result.FAILED)
    second = JobView("t-b2-2", replace(retried.run, attempt=2), result=Result.FAILED)

    expired = expired_jobs([waiting, retried, second], spec, [])

    assert expired == ["t-b2", "t-b2-2"]


def test_the_previous_status_is_read_once_into_what_the_next_decision_needs() -> None:
    status = {
        "observedGeneration": 3,
        "lastScheduleTime": "2026-05-01T12:00:00Z",
        "runNowToken": "a",
        "consecutiveFailures": 2,
        "conditions": [
            {"type": "Suspended", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "StoppedAfterFailures"},
            "not a condition",
        ],
        "history": [{"scheduledTime": "2026-05-01T12:00:00Z", "result": "Failed"}],
    }

    previous = read_previous(status, generation=3, resume_token=None)

    assert previous.last_schedule_time == CREATED
    assert previous.handled_run_now_token == "a"
    assert (previous.was_suspended, previous.was_stopped) == (True, True)
    assert previous.consecutive_failures == 2
    assert [entry.result for entry in previous.history] == [Result.FAILED]
    assert previous.backfill is None
    # A new generation or a new resume token starts the count again.
    assert read_previous(status, generation=4, resume_token=None).consecutive_failures == 0
    assert read_previous(status, generation=3, resume_token="r").consecutive_failures == 0


@pytest.mark.parametrize(
    "status",
    [
        {"runNowToken": 7, "conditions": "none", "lastScheduleTime": 5, "history": "x"},
        {"conditions": 5, "history": [{"scheduledTime": "2026-05-01T12:00:00Z", "attempt": "x"}]},
        {"conditions": ["x", 3], "history": [7, {"result": "Succeeded"}]},
    ],
)
def test_a_previous_status_of_the_wrong_shapes_reads_as_empty(status: dict[str, Any]) -> None:
    previous = read_previous(status, generation=1, resume_token=None)

    assert previous.handled_run_now_token is None
    assert previous.last_schedule_time is None
    assert (previous.was_suspended, previous.was_stopped, previous.history) == (False, False, [])
    # ... and the next status is decided from it, not an exception.
    update = reduce_status(status, Observation(spec_of(), [], at(1), 1))
    assert {c["type"] for c in update.status["conditions"]} >= {"Ready"}
