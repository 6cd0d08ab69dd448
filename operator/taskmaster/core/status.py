"""Status reduction: observed Jobs and the scheduler's decisions to a task's `status`.

The status is the durable record: Jobs are deleted beyond the history limits,
but each finished run stays in `status.history` (up to `historyLimit`) and in
the counters. A finished Job is recorded once: it is new exactly when its name
is not in the history yet (Jobs whose entry falls out of the history are
deleted, see `expired_jobs`, so they cannot come back as new).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from taskmaster.core.backfill import Backfill
from taskmaster.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_RUN_NOW,
    LABEL_ATTEMPT,
    LABEL_SCHEDULED_TIME,
    LABEL_TRIGGER,
    Run,
    Trigger,
)
from taskmaster.core.schedule import RunAt
from taskmaster.core.spec import ConcurrencyPolicy, InvalidSpec, TaskSpec
from taskmaster.core.times import parse_time, rfc3339

_MESSAGE_LIMIT = 1024


class Result(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    MISSED = "Missed"
    SKIPPED = "Skipped"
    REPLACED = "Replaced"

    @property
    def ran(self) -> bool:
        """Whether a Job ran to an end (as opposed to never starting or being cut off)."""
        return self in (Result.SUCCEEDED, Result.FAILED, Result.TIMED_OUT)

    @property
    def failed(self) -> bool:
        return self in (Result.FAILED, Result.TIMED_OUT, Result.MISSED)


class Phase(StrEnum):
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"
    INVALID = "Invalid"


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


@dataclass(frozen=True)
class JobView:
    """What the operator needs to know of one of its Jobs."""

    name: str
    run: Run
    start_time: datetime | None = None
    completion_time: datetime | None = None
    result: Result | None = None
    reason: str = ""
    message: str = ""
    deleting: bool = False

    @property
    def active(self) -> bool:
        return self.result is None and not self.deleting

    def with_pod(self, outcome: PodOutcome | None) -> JobView:
        """The view with its pod's exit, termination message or disruption as the message."""
        if outcome is None or self.result is None:
            return self
        detail = outcome.describe()
        if not detail and self.result is Result.SUCCEEDED:
            return replace(self, message="")
        return replace(self, message=detail or self.message)

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> JobView | None:
        """Read a Job object; None when it lacks the labels of a TaskMaster run."""
        metadata = job.get("metadata") or {}
        labels = metadata.get("labels") or {}
        try:
            scheduled = datetime.fromtimestamp(int(labels[LABEL_SCHEDULED_TIME]), UTC)
            attempt = int(labels.get(LABEL_ATTEMPT, "1"))
            trigger = Trigger(labels.get(LABEL_TRIGGER, Trigger.SCHEDULE.value))
        except (KeyError, ValueError):
            return None
        status = job.get("status") or {}
        result, reason, message, finished_at = None, "", "", None
        for condition in status.get("conditions") or ():
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                result = Result.SUCCEEDED
            elif condition.get("type") == "Failed":
                timed_out = condition.get("reason") == "DeadlineExceeded"
                result = Result.TIMED_OUT if timed_out else Result.FAILED
            else:
                continue
            reason = condition.get("reason") or ""
            message = condition.get("message") or ""
            finished_at = parse_time(condition.get("lastTransitionTime"))
        annotations = metadata.get("annotations") or {}
        backfill = annotations.get(ANNOTATION_BACKFILL)
        token = backfill or annotations.get(ANNOTATION_RUN_NOW)
        return cls(
            name=metadata.get("name", ""),
            run=Run(scheduled, attempt, trigger, token, backfill=backfill is not None),
            start_time=parse_time(status.get("startTime")),
            completion_time=parse_time(status.get("completionTime")) or finished_at,
            result=result,
            reason=reason,
            message=message[:_MESSAGE_LIMIT],
            deleting=bool(metadata.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class PodOutcome:
    """How a run's pod ended, as the kubelet (or a disruption) reported it."""

    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    disruption: str = ""

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodOutcome | None:
        """The outcome of a finished or disrupted pod; None while it runs."""
        status = pod.get("status") or {}
        disruption = next(
            (
                f"{c.get('reason') or 'Disrupted'}: {c.get('message') or ''}".rstrip(": ")
                for c in status.get("conditions") or ()
                if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            ),
            "",
        )
        for container in status.get("containerStatuses") or ():
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                return cls(
                    exit_code=terminated.get("exitCode"),
                    reason=terminated.get("reason") or "",
                    message=(terminated.get("message") or "").strip()[:_MESSAGE_LIMIT],
                    disruption=disruption,
                )
        return cls(disruption=disruption) if disruption else None

    def describe(self) -> str:
        """`exit code 3 (Error): disk full`; a success shows its message only."""
        if self.exit_code == 0:
            return self.message
        parts = []
        if self.exit_code is not None:
            parts.append(
                f"exit code {self.exit_code}" + (f" ({self.reason})" if self.reason else "")
            )
        if self.disruption:
            parts.append(f"disrupted ({self.disruption})")
        text = ", ".join(parts)
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class HistoryEntry:
    scheduled_time: datetime
    result: Result
    job_name: str | None = None
    attempt: int = 1
    trigger: Trigger = Trigger.SCHEDULE
    start_time: datetime | None = None
    completion_time: datetime | None = None
    reason: str = ""
    message: str = ""
    # How many scheduled times one Missed entry stands for (counted, not stored).
    runs: int = 1

    def to_status(self) -> dict[str, Any]:
        entry = {
            "scheduledTime": rfc3339(self.scheduled_time),
            "jobName": self.job_name,
            "attempt": self.attempt,
            "trigger": self.trigger.value,
            "startTime": _time(self.start_time),
            "completionTime": _time(self.completion_time),
            "result": self.result.value,
            "reason": self.reason,
            "message": self.message,
        }
        return {k: v for k, v in entry.items() if v is not None and v != ""}

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> HistoryEntry | None:
        scheduled = parse_time(entry.get("scheduledTime"))
        try:
            result = Result(str(entry.get("result")))
            trigger = Trigger(entry.get("trigger", Trigger.SCHEDULE.value))
            attempt = int(entry.get("attempt", 1))
        except (TypeError, ValueError):
            return None
        if scheduled is None:
            return None
        return cls(
            scheduled_time=scheduled,
            result=result,
            job_name=entry.get("jobName"),
            attempt=attempt,
            trigger=trigger,
            start_time=parse_time(entry.get("startTime")),
            completion_time=parse_time(entry.get("completionTime")),
            reason=entry.get("reason", ""),
            message=entry.get("message", ""),
        )

    @classmethod
    def from_job(cls, job: JobView, result: Result) -> HistoryEntry:
        return cls(
            scheduled_time=job.run.scheduled,
            result=result,
            job_name=job.name,
            attempt=job.run.attempt,
            trigger=job.run.trigger,
            start_time=job.start_time,
            completion_time=job.completion_time,
            reason=job.reason,
            message=job.message,
        )


def _newest_first(entry: HistoryEntry) -> tuple[datetime, datetime, int]:
    ended = entry.completion_time or entry.scheduled_time
    return (entry.scheduled_time, ended, entry.attempt)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def conditions_of(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A task status's conditions, skipping anything that is not one (whoever may write
    the status subresource may write anything there)."""
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return []
    return [c for c in conditions if isinstance(c, Mapping)]


def _conditions(
    previous: Sequence[Mapping[str, Any]],
    wanted: Iterable[Condition],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    conditions = []
    for condition in wanted:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        changed = old.get("status") != status
        conditions.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": rfc3339(now)
                if changed
                else old.get("lastTransitionTime", rfc3339(now)),
                "observedGeneration": generation,
            }
        )
    return conditions


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from, besides the previous status."""

    spec: TaskSpec | None
    jobs: Sequence[JobView]
    now: datetime
    generation: int | None = None
    invalid: InvalidSpec | None = None
    # The scheduler's decisions since the last status: runs not started, Jobs replaced.
    records: Sequence[HistoryEntry] = ()
    last_schedule_time: datetime | None = None
    next_run_time: datetime | None = None
    run_now_token: str | None = None
    # Why no decision could be taken this time (it ran past its time box).
    overrun: str | None = None
    # Failed runs in a row before this observation's (see failure_streak); None:
    # the previous status's count.
    consecutive_failures: int | None = None
    # The taskmaster.dev/resume value acted on; None: the previous status's.
    resume_token: str | None = None
    # status.backfill as decided (backfill.Backfill.to_status); None: the previous one.
    backfill: Mapping[str, Any] | None = None
    # Jobs recorded since the status was last written: recorded already, even if
    # their entries fell out of the history kept (their Jobs go once it is written).
    recorded_jobs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StatusUpdate:
    status: dict[str, Any]
    # History entries this update adds, oldest first: one Event and metric each.
    recorded: list[HistoryEntry] = field(default_factory=list)


def read_history(status: Mapping[str, Any]) -> list[HistoryEntry]:
    """`status.history` as entries, skipping any that cannot be read."""
    history = status.get("history")
    return [
        entry
        for raw in (history if isinstance(history, list) else ())
        if isinstance(raw, Mapping) and (entry := HistoryEntry.from_status(raw)) is not None
    ]


def _last_outcome(history: Sequence[HistoryEntry]) -> HistoryEntry | None:
    """The newest run that ran to an end or was missed (not skipped or replaced)."""
    return next((e for e in history if e.result.ran or e.result is Result.MISSED), None)


def failure_streak(
    previous: Mapping[str, Any], *, generation: int | None, resume_token: str | None
) -> int:
    """The failed runs in a row the next decision starts from: the previous status's
    count, unless the spec changed or a new resume token came since (they reset it)."""
    if generation != previous.get("observedGeneration"):
        return 0
    if resume_token and resume_token != previous.get("resumeToken"):
        return 0
    count = previous.get("consecutiveFailures")
    return count if isinstance(count, int) and count > 0 else 0


def count_failures(count: int, entries: Iterable[HistoryEntry], spec: TaskSpec) -> int:
    """`count` after the runs that ended in `entries`, in the order they ended: a run
    failed when its last attempt failed or timed out with no retry to come (past
    retry.limit, or its Job refused by the API: such a run is not retried); a success
    resets the count."""
    for entry in sorted(entries, key=lambda e: (e.completion_time or e.scheduled_time, e.attempt)):
        if entry.result is Result.SUCCEEDED:
            count = 0
        elif entry.result in (Result.FAILED, Result.TIMED_OUT) and (
            entry.attempt > spec.retry.limit or entry.job_name is None
        ):
            count += 1
    return count


STOPPED_REASON = "StoppedAfterFailures"


def says_stopped(status: Mapping[str, Any]) -> bool:
    """Whether a status says stopAfterConsecutiveFailures stopped the task: its Ready
    condition does (the phase says Running while a manual run is active)."""
    return any(
        c.get("type") == "Ready" and c.get("reason") == STOPPED_REASON
        for c in conditions_of(status)
    )


@dataclass(frozen=True)
class PreviousStatus:
    """What the next decision reads of the status last decided, read in one place."""

    last_schedule_time: datetime | None
    handled_run_now_token: str | None
    history: list[HistoryEntry]
    was_suspended: bool
    was_stopped: bool
    consecutive_failures: int
    backfill: Backfill | None


def read_previous(
    status: Mapping[str, Any], *, generation: int | None, resume_token: str | None
) -> PreviousStatus:
    token = status.get("runNowToken")
    return PreviousStatus(
        last_schedule_time=parse_time(status.get("lastScheduleTime")),
        handled_run_now_token=token if isinstance(token, str) else None,
        history=read_history(status),
        was_suspended=any(
            c.get("type") == "Suspended" and c.get("status") == "True"
            for c in conditions_of(status)
        ),
        was_stopped=says_stopped(status),
        consecutive_failures=failure_streak(
            status, generation=generation, resume_token=resume_token
        ),
        backfill=Backfill.from_status(status.get("backfill")),
    )


def stopped(spec: TaskSpec, failures: int) -> bool:
    """Whether stopAfterConsecutiveFailures stops the task."""
    limit = spec.stop_after_consecutive_failures
    return limit is not None and failures >= limit


def stop_message(spec: TaskSpec, failures: int) -> str:
    return (
        f"stopped after {failures} consecutive failed runs"
        f" (spec.stopAfterConsecutiveFailures: {spec.stop_after_consecutive_failures}):"
        " no new scheduled runs; change the spec or set a new taskmaster.dev/resume"
        " annotation (kubectl taskmaster resume) to start it again"
    )


def _stops(observed: Observation, failures: int) -> bool:
    """Whether the stop holds runs back: a task with none left (a one-time task, one past
    endAt or maxRuns) is Failed or Completed, not Stopped."""
    spec = observed.spec
    if spec is None or not stopped(spec, failures) or isinstance(spec.schedule, RunAt):
        return False
    return spec.timeline.next(observed.last_schedule_time) is not None


def _phase(
    observed: Observation, active: bool, history: Sequence[HistoryEntry], failures: int
) -> Phase:
    spec = observed.spec
    if observed.invalid is not None or spec is None:
        return Phase.INVALID
    last = _last_outcome(history)
    for phase, holds in (
        (Phase.RUNNING, active),
        (Phase.SUSPENDED, spec.suspend),
        (Phase.STOPPED, _stops(observed, failures)),
        (Phase.SCHEDULED, observed.next_run_time is not None),
        (
            Phase.FAILED,
            isinstance(spec.schedule, RunAt) and last is not None and last.result.failed,
        ),
    ):
        if holds:
            return phase
    return Phase.COMPLETED


# Failed runs kept beyond historyLimit for their retry, at most (a status must
# stay far below etcd's object size limit).
_MAX_PENDING = 100


def _kept(history: list[HistoryEntry], spec: TaskSpec) -> list[HistoryEntry]:
    """The newest `historyLimit` entries; and, beyond them, a failed run whose retry is
    still to come: its entry is the record of that retry (its Job may be gone).
    Under Replace only the newest run is retried (see decide)."""
    newest = max(
        (e.scheduled_time for e in history if e.trigger is not Trigger.MANUAL), default=None
    )
    latest = _latest_attempts((e.job_name, e.attempt) for e in history if e.job_name)

    def pending(entry: HistoryEntry) -> bool:
        return (
            entry.result in (Result.FAILED, Result.TIMED_OUT)
            and entry.trigger is not Trigger.MANUAL
            and entry.job_name is not None
            and entry.attempt <= spec.retry.limit
            and latest[_first_attempt_name(entry.job_name, entry.attempt)] == entry.attempt
            and (
                spec.concurrency_policy is not ConcurrencyPolicy.REPLACE
                or entry.scheduled_time == newest
            )
        )

    limit = spec.history_limit
    # Bounded, like the history itself: past that many, the oldest are forgotten.
    return history[:limit] + [entry for entry in history[limit:] if pending(entry)][:_MAX_PENDING]


def reduce_status(previous: Mapping[str, Any], observed: Observation) -> StatusUpdate:
    """The next status, and the history entries it adds."""
    history = read_history(previous)
    known_jobs = {entry.job_name for entry in history if entry.job_name} | observed.recorded_jobs
    recorded = [
        HistoryEntry.from_job(job, job.result)
        for job in observed.jobs
        if job.result is not None and job.name not in known_jobs
    ]
    recorded += [r for r in observed.records if r.job_name is None or r.job_name not in known_jobs]
    recorded.sort(key=_newest_first)
    history = sorted([*history, *recorded], key=_newest_first, reverse=True)
    if observed.spec is not None:
        history = _kept(history, observed.spec)

    counters = {
        name: int(previous.get(name) or 0) for name in ("succeededRuns", "failedRuns", "missedRuns")
    }
    last_success = parse_time(previous.get("lastSuccessfulTime"))
    last_failure = parse_time(previous.get("lastFailureTime"))
    for entry in recorded:
        ended = entry.completion_time or entry.scheduled_time
        if entry.result is Result.SUCCEEDED:
            counters["succeededRuns"] += 1
            last_success = max(filter(None, (last_success, ended)))
        elif entry.result in (Result.FAILED, Result.TIMED_OUT):
            counters["failedRuns"] += 1
            last_failure = max(filter(None, (last_failure, ended)))
        elif entry.result is Result.MISSED:
            counters["missedRuns"] += entry.runs

    failures = observed.consecutive_failures
    if failures is None:
        failures = failure_streak(previous, generation=observed.generation, resume_token=None)
    if observed.spec is not None:
        failures = count_failures(failures, recorded, observed.spec)
    active = sorted(
        (job for job in observed.jobs if job.active), key=lambda j: (j.run.scheduled, j.run.attempt)
    )
    phase = _phase(observed, bool(active), history, failures)
    last_schedule_time, run_now_token = observed.last_schedule_time, observed.run_now_token
    if observed.spec is None:
        # Nothing is decided while the spec is invalid: the schedule cursor and
        # the handled run-now token stay, so fixing the spec neither replays
        # the schedule from the start nor reruns a manual run.
        last_schedule_time = parse_time(previous.get("lastScheduleTime"))
        run_now_token = previous.get("runNowToken")
    status: dict[str, Any] = {
        "phase": phase.value,
        "observedGeneration": observed.generation,
        "nextRunTime": _time(observed.next_run_time),
        "lastScheduleTime": _time(last_schedule_time),
        "lastSuccessfulTime": _time(last_success),
        "lastFailureTime": _time(last_failure),
        "active": [
            {
                "jobName": job.name,
                "scheduledTime": rfc3339(job.run.scheduled),
                "attempt": job.run.attempt,
            }
            for job in active
        ],
        "history": [entry.to_status() for entry in history],
        **counters,
        "runNowToken": run_now_token,
        "consecutiveFailures": failures or None,
        "resumeToken": observed.resume_token or previous.get("resumeToken"),
        "backfill": observed.backfill or previous.get("backfill"),
        "conditions": _conditions(
            conditions_of(previous),
            _wanted_conditions(observed, phase, active, history, failures),
            observed.generation,
            observed.now,
        ),
    }
    return StatusUpdate(status=status, recorded=recorded)


def _wanted_conditions(
    observed: Observation,
    phase: Phase,
    active: Sequence[JobView],
    history: Sequence[HistoryEntry],
    failures: int,
) -> list[Condition]:
    spec = observed.spec
    if observed.invalid is not None or spec is None:
        message = str(observed.invalid) if observed.invalid else "the spec cannot be read"
        ready = Condition("Ready", False, "InvalidSpec", message)
    elif spec.suspend:
        ready = Condition("Ready", False, "Suspended", "spec.suspend is true: no new runs")
    elif _stops(observed, failures):
        ready = Condition("Ready", False, STOPPED_REASON, stop_message(spec, failures))
    elif observed.next_run_time is not None:
        next_run = rfc3339(observed.next_run_time)
        ready = Condition("Ready", True, "Scheduled", f"next run at {next_run}")
    else:
        ready = Condition("Ready", False, "NoRunsLeft", f"the task is {phase.value.lower()}")
    suspended = Condition(
        "Suspended",
        bool(spec and spec.suspend),
        "SuspendedBySpec" if spec and spec.suspend else "NotSuspended",
    )
    running = Condition(
        "Running",
        bool(active),
        "JobActive" if active else "NoActiveJob",
        ", ".join(job.name for job in active),
    )
    last = _last_outcome(history)
    if observed.overrun is not None:
        degraded = Condition("Degraded", True, "DecisionOverrun", observed.overrun)
    elif last is not None and last.result.failed:
        degraded = Condition(
            "Degraded", True, f"Run{last.result.value}", last.message or last.reason
        )
    else:
        degraded = Condition("Degraded", False, "LastRunSucceeded" if last else "NoRunYet")
    return [ready, suspended, running, degraded]


def same_status(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether patching `status` over `previous` would change nothing (a null in a
    merge patch removes a key: as good as absent)."""
    return all(_present(previous.get(key)) == _present(value) for key, value in status.items())


def _present(value: Any) -> Any:
    """`value` without the keys of its objects that are null."""
    if isinstance(value, Mapping):
        return {k: _present(v) for k, v in value.items() if v is not None}
    return value


def expired_jobs(jobs: Sequence[JobView], spec: TaskSpec, history: Sequence[Any]) -> list[str]:
    """Finished Jobs to delete: beyond their history limit, or no longer in `status.history`."""
    in_history = {entry.get("jobName") for entry in history}
    finished = sorted(
        (job for job in jobs if job.result is not None and not job.deleting),
        key=lambda j: (j.run.scheduled, j.run.attempt),
        reverse=True,
    )
    succeeded = [job for job in finished if job.result is Result.SUCCEEDED]
    failed = [job for job in finished if job.result is not Result.SUCCEEDED]
    # A failed manual or backfill run whose retry is still to come stays: its Job is
    # the only record of the token its retry is named by.
    latest = _latest_attempts((job.name, job.run.attempt) for job in jobs)
    waiting = {
        job.name
        for job in failed
        if job.run.token is not None
        and job.run.attempt <= spec.retry.limit
        and latest[_first_attempt_name(job.name, job.run.attempt)] == job.run.attempt
    }
    failed = [job for job in failed if job.name not in waiting]
    expired = (
        succeeded[spec.successful_jobs_history_limit :] + failed[spec.failed_jobs_history_limit :]
    )
    expired += [
        job
        for job in finished
        if job.name not in in_history and job not in expired and job.name not in waiting
    ]
    # A run's earlier attempts go with a later one: a failed first attempt that
    # outlived every record of its retry would be retried again.
    gone = {_first_attempt_name(job.name, job.run.attempt): job.run.attempt for job in expired}
    expired += [
        job
        for job in finished
        if job not in expired
        and job.run.attempt < gone.get(_first_attempt_name(job.name, job.run.attempt), 0)
    ]
    # Earlier attempts go first: were the operator to stop between two deletions,
    # a later attempt left alone still says the run was retried.
    expired.sort(key=lambda job: (job.run.scheduled, job.run.attempt))
    return [job.name for job in expired]


def _latest_attempts(attempts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The latest attempt of each run, by the name of its first attempt, from the
    (Job name, attempt) of the attempts known."""
    latest: dict[str, int] = {}
    for name, attempt in attempts:
        first = _first_attempt_name(name, attempt)
        latest[first] = max(latest.get(first, 0), attempt)
    return latest


def _first_attempt_name(name: str, attempt: int) -> str:
    """The Job name of a run's first attempt, from that of any attempt (`<run>-<n>`)."""
    return name if attempt == 1 else name.rsplit("-", 1)[0]
