"""The decision function: given a task, its Jobs and the time, what to do now.

Like the CronJob controller's `syncCronJob`, but pure: it returns a Plan (Jobs
to create or delete, runs to record as missed or skipped, the new schedule
cursor, when to wake up next) and the shell carries it out.

`lastScheduleTime` is the cursor: the latest scheduled time the operator has
dealt with (run, skipped, missed, or passed while suspended). Scheduled times
after it and due by now are this decision's business:

- a time whose due instant (scheduled time plus jitter) is more than
  `startingDeadlineSeconds` ago is Missed;
- a time that fell due while this operator was not scheduling (before `since`:
  downtime or failover) follows `missedRunPolicy`;
- any other time runs, subject to `concurrencyPolicy`.

Job names are deterministic, so a run whose Job already exists is never
created again, whatever the cursor says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from taskmaster.core.names import Run, TaskRef, Trigger, job_name
from taskmaster.core.render import rfc3339
from taskmaster.core.schedule import jitter
from taskmaster.core.spec import ConcurrencyPolicy, MissedRunPolicy, TaskSpec
from taskmaster.core.status import HistoryEntry, JobView, Result

# Counting missed times one by one stops here; beyond it the count says "at least".
_MISSED_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class TaskState:
    task: TaskRef
    spec: TaskSpec
    jobs: Sequence[JobView]
    last_schedule_time: datetime | None
    # Since when this operator has been scheduling (start or leadership).
    since: datetime
    run_now_token: str | None = None
    handled_run_now_token: str | None = None
    # The last status said Suspended: times passed meanwhile are not runs.
    was_suspended: bool = False
    # status.history: failed attempts whose Jobs are gone still count for retries.
    history: Sequence[HistoryEntry] = ()


@dataclass
class Plan:
    last_schedule_time: datetime | None
    run_now_token: str | None
    create: list[Run] = field(default_factory=list)
    delete: list[JobView] = field(default_factory=list)
    records: list[HistoryEntry] = field(default_factory=list)
    next_run_time: datetime | None = None
    wake_at: datetime | None = None


def due_at(key: str, spec: TaskSpec, scheduled: datetime) -> datetime:
    """When a scheduled time is due: the time plus the task's jitter for it."""
    return scheduled + jitter(key, scheduled, spec.jitter_seconds)


@dataclass
class _Missed:
    """Scheduled times that will not run, counted (a floor past the counting limit)."""

    first: datetime
    last: datetime
    count: int = 1
    exact: bool = True

    def add(self, scheduled: datetime) -> None:
        self.last = scheduled
        self.count += 1

    def entry(self, why: str, reason: str) -> HistoryEntry:
        if self.count == 1:
            message = f"run at {rfc3339(self.last)} not started: {why}"
        else:
            runs = str(self.count) if self.exact else f"at least {self.count}"
            message = (
                f"{runs} runs from {rfc3339(self.first)} to {rfc3339(self.last)} not started: {why}"
            )
        return HistoryEntry(
            scheduled_time=self.last,
            result=Result.MISSED,
            reason=reason,
            message=message,
            runs=self.count,
        )

    @classmethod
    def of(cls, times: Sequence[datetime]) -> _Missed:
        return cls(first=times[0], last=times[-1], count=len(times))


def _due_times(state: TaskState, now: datetime) -> tuple[_Missed | None, list[datetime]]:
    """Scheduled times due by `now`: (too late to start, still startable, oldest first)."""
    deadline = state.spec.starting_deadline
    late: _Missed | None = None
    startable: list[datetime] = []
    times = state.spec.timeline.times(state.last_schedule_time)
    while (scheduled := next(times, None)) is not None:
        due = due_at(state.task.key, state.spec, scheduled)
        if due > now:
            break
        if now - due <= deadline:
            startable.append(scheduled)
        elif late is None:
            late = _Missed(scheduled, scheduled)
        else:
            late.add(scheduled)
            if late.count % _MISSED_COUNT_LIMIT == 0:
                # Too many to count (a seconds schedule after long downtime): jump
                # to what may still be startable; the count becomes a floor.
                horizon = now - deadline - timedelta(seconds=state.spec.jitter_seconds + 1)
                if horizon > scheduled:
                    late.exact = False
                    times = state.spec.timeline.times(horizon)
    return late, startable


def _started_runs(state: TaskState) -> set[datetime]:
    return {
        job.run.scheduled
        for job in state.jobs
        if job.run.trigger is not Trigger.MANUAL and job.run.attempt == 1
    }


def decide(state: TaskState, now: datetime) -> Plan:
    spec = state.spec
    plan = Plan(
        last_schedule_time=state.last_schedule_time,
        run_now_token=state.handled_run_now_token,
    )
    active = [job for job in state.jobs if job.active]

    token = state.run_now_token
    if token and token != state.handled_run_now_token:
        # Manual runs happen whatever the schedule, suspend or concurrency say.
        plan.create.append(Run(now.replace(microsecond=0), trigger=Trigger.MANUAL, token=token))
        plan.run_now_token = token

    if spec.suspend or state.was_suspended:
        passed = spec.timeline.last_until(now)
        if passed is not None and (plan.last_schedule_time or passed) <= passed:
            plan.last_schedule_time = passed
        if spec.suspend:
            return plan

    retries, retry_at = _retries(state, now)
    plan.create += retries

    late, startable = _due_times(replace(state, last_schedule_time=plan.last_schedule_time), now)
    if late is not None:
        why = f"more than startingDeadlineSeconds ({spec.starting_deadline_seconds}s) late"
        plan.records.append(late.entry(why, "MissedStartingDeadline"))
        plan.last_schedule_time = late.last

    downtime: list[datetime] = []
    regular: list[datetime] = []
    for scheduled in startable:
        fell_due = due_at(state.task.key, state.spec, scheduled)
        (downtime if fell_due < state.since else regular).append(scheduled)
    to_run = _catch_up(plan, spec, downtime)
    to_run += [(t, Trigger.SCHEDULE) for t in regular]

    started = _started_runs(state)
    for scheduled, trigger in to_run:
        plan.last_schedule_time = scheduled
        if scheduled in started:
            continue
        _start(plan, spec, active, Run(scheduled, trigger=trigger))

    plan.next_run_time = spec.timeline.next(plan.last_schedule_time)
    if plan.next_run_time is not None:
        plan.wake_at = due_at(state.task.key, state.spec, plan.next_run_time)
    if retry_at is not None and (plan.wake_at is None or retry_at < plan.wake_at):
        plan.next_run_time = plan.wake_at = retry_at
    return plan


def _retries(state: TaskState, now: datetime) -> tuple[list[Run], datetime | None]:
    """Retry attempts due now, and when the next one falls due.

    The latest attempt of each run decides: if it failed or timed out and the
    limit allows another, the next attempt starts `backoff.delay(attempt)`
    after it ended. A run whose Job the API refused is not retried.
    """
    retry = state.spec.retry
    if retry.limit == 0:
        return [], None
    latest: dict[tuple[datetime, str | None], tuple[int, Result | None, datetime, Trigger]] = {}
    attempts = [
        (e.scheduled_time, None, e.attempt, e.result, e.completion_time, e.trigger)
        for e in state.history
        # Scheduled runs only: a manual run's retry is named by its token, kept on its Job.
        if e.job_name == job_name(state.task.name, Run(e.scheduled_time, e.attempt))
    ] + [
        (j.run.scheduled, j.run.token, j.run.attempt, j.result, j.completion_time, j.run.trigger)
        for j in state.jobs
    ]
    for scheduled, token, attempt, result, ended, trigger in attempts:
        key = (scheduled, token)
        if key not in latest or attempt >= latest[key][0]:
            latest[key] = (attempt, result, ended or scheduled, trigger)
    due: list[Run] = []
    later: datetime | None = None
    for (scheduled, token), (attempt, result, ended, _) in latest.items():
        if result not in (Result.FAILED, Result.TIMED_OUT) or attempt > retry.limit:
            continue
        at = ended + retry.backoff.delay(attempt + 1)
        if at <= now:
            due.append(Run(scheduled, attempt + 1, Trigger.RETRY, token))
        elif later is None or at < later:
            later = at
    return sorted(due, key=lambda r: (r.scheduled, r.attempt)), later


def _catch_up(
    plan: Plan, spec: TaskSpec, downtime: list[datetime]
) -> list[tuple[datetime, Trigger]]:
    """The runs missedRunPolicy starts for times that fell due while no operator acted."""
    if not downtime:
        return []
    plan.last_schedule_time = downtime[-1]
    policy = spec.missed_run_policy
    if policy is MissedRunPolicy.RUN_ALL:
        return [(t, Trigger.CATCH_UP) for t in downtime]
    if policy is MissedRunPolicy.RUN_LATEST:
        if len(downtime) > 1:
            why = "missedRunPolicy RunLatest runs only the latest"
            plan.records.append(_Missed.of(downtime[:-1]).entry(why, "MissedRunPolicy"))
        return [(downtime[-1], Trigger.CATCH_UP)]
    why = "missedRunPolicy Skip runs none of the times missed"
    plan.records.append(_Missed.of(downtime).entry(why, "MissedRunPolicy"))
    return []


def _start(plan: Plan, spec: TaskSpec, active: list[JobView], run: Run) -> None:
    running = [job.name for job in active] + [
        f"run at {rfc3339(r.scheduled)}" for r in plan.create if r.trigger is not Trigger.MANUAL
    ]
    policy = spec.concurrency_policy
    if policy is ConcurrencyPolicy.FORBID and running:
        plan.records.append(
            HistoryEntry(
                scheduled_time=run.scheduled,
                result=Result.SKIPPED,
                trigger=run.trigger,
                reason="ConcurrencyPolicyForbid",
                message=f"not started: {', '.join(running)} still running",
            )
        )
        return
    if policy is ConcurrencyPolicy.REPLACE:
        for job in active:
            if job not in plan.delete:
                plan.delete.append(job)
                plan.records.append(
                    HistoryEntry(
                        scheduled_time=job.run.scheduled,
                        result=Result.REPLACED,
                        job_name=job.name,
                        attempt=job.run.attempt,
                        trigger=job.run.trigger,
                        start_time=job.start_time,
                        completion_time=run.scheduled,
                        reason="ConcurrencyPolicyReplace",
                        message=f"deleted for the run at {rfc3339(run.scheduled)}",
                    )
                )
        superseded = [r for r in plan.create if r.trigger is not Trigger.MANUAL]
        for earlier in superseded:
            plan.create.remove(earlier)
            plan.records.append(
                HistoryEntry(
                    scheduled_time=earlier.scheduled,
                    result=Result.REPLACED,
                    trigger=earlier.trigger,
                    reason="ConcurrencyPolicyReplace",
                    message=f"superseded by the run at {rfc3339(run.scheduled)}",
                )
            )
    plan.create.append(run)
