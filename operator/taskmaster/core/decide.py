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
- any other time runs, subject to `concurrencyPolicy`;
- with the operator's cap on runs in flight (`--max-active-runs`), runs beyond
  the slots free wait, oldest first: the cursor stays before them, and one
  that waits past its starting deadline is Missed, saying so.

Job names are deterministic, so a run whose Job already exists is never
created again, whatever the cursor says.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from taskmaster.core.backfill import (
    Backfill,
    BackfillState,
    BadRequest,
    check,
    next_runs,
    parse_request,
    refused,
)
from taskmaster.core.names import ANNOTATION_BACKFILL, Run, TaskRef, Trigger, job_name
from taskmaster.core.schedule import WALK_STEPS, jitter
from taskmaster.core.spec import ConcurrencyPolicy, MissedRunPolicy, TaskSpec
from taskmaster.core.status import HistoryEntry, JobView, Result, count_failures, stopped
from taskmaster.core.times import rfc3339

# A decision starts at most this many scheduled runs of one task. When more
# are due at once (RunAll after a long downtime, a seconds schedule whose
# reconcile came late), the newest start and the older ones are recorded
# Missed with their count: the CronJob controller's "too many missed start
# times", without its cliff (it starts none).
MAX_RUNS_PER_DECISION = 100
# How often a decision jumps ahead over times it would only count, each after
# walking WALK_STEPS of them; past _MAX_WALKED walked it stops where it is and
# goes on at once in the next decision. Every decision is bounded by these.
_MAX_JUMPS = 8
# The most scheduled times one decision walks one by one.
_MAX_WALKED = 16 * WALK_STEPS
_INSTANT = timedelta(microseconds=1)
# A time whose decision came this much later than it fell due (the task's
# reconcile backed off, or the operator was behind) is a missed time, like one
# that fell due while no operator acted: missedRunPolicy decides. Less late
# than this, it is simply a late run.
CATCH_UP_AFTER = timedelta(seconds=10)
# A task with runs waiting for a slot (TaskState.slots) is woken by a slot freed;
# failing that, it decides again this often at most (and by its oldest held run's
# deadline at least).
WAITING_RECHECK = timedelta(seconds=10)
# The reason of a run recorded Missed for having waited too long for a slot.
WAITED_FOR_SLOT = "MaxActiveRuns"


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
    # When the spec last changed (from the object's managedFields), if known: a
    # task resumed while no operator acted was suspended only until then.
    spec_changed_at: datetime | None = None
    # status.history: failed attempts whose Jobs are gone still count for retries.
    history: Sequence[HistoryEntry] = ()
    # Failed runs in a row recorded so far (status.failure_streak), and whether the
    # last status said Stopped: times passed while stopped are not runs.
    consecutive_failures: int = 0
    was_stopped: bool = False
    # Jobs recorded since the status was last written (status.Observation.recorded_jobs).
    recorded_jobs: frozenset[str] = frozenset()
    # The taskmaster.dev/backfill annotation as written, and status.backfill.
    backfill_request: str | None = None
    backfill: Backfill | None = None
    # Runs this decision may start under the operator's cap on runs in flight
    # (--max-active-runs); None: no cap.
    slots: int | None = None
    # The oldest run an earlier decision held for want of a slot: times from it on
    # waited (they are not missed by the operator's absence, and one past its
    # deadline is Missed for the cap).
    waiting_from: datetime | None = None


@dataclass
class Plan:
    last_schedule_time: datetime | None
    run_now_token: str | None
    create: list[Run] = field(default_factory=list)
    delete: list[JobView] = field(default_factory=list)
    records: list[HistoryEntry] = field(default_factory=list)
    next_run_time: datetime | None = None
    wake_at: datetime | None = None
    # status.backfill to write; None: as it is.
    backfill: Backfill | None = None
    # The oldest run held for want of a slot (TaskState.slots); None: none held.
    waiting: datetime | None = None


def due_at(key: str, spec: TaskSpec, scheduled: datetime) -> datetime:
    """When a scheduled time is due: the time plus the task's jitter for it.

    The jitter never delays a run into the next scheduled time (at most to a
    second before it), so runs fall due in the order of their times: the cursor
    never passes a time that is not due yet, and one wake-up covers what is.
    """
    delay = jitter(key, scheduled, spec.jitter_seconds)
    if delay:
        following = spec.timeline.next(scheduled)
        if following is not None:
            delay = min(delay, following - scheduled - timedelta(seconds=1))
    return scheduled + delay


@dataclass
class _Missed:
    """Scheduled times that will not run, counted (a floor past the counting limit)."""

    first: datetime
    last: datetime
    count: int = 1
    exact: bool = True

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


@dataclass
class _Due:
    """The scheduled times from the cursor up to now, sorted out by one bounded walk."""

    # More than startingDeadlineSeconds late; of those, the ones that waited for a slot.
    late: _Missed | None = None
    waited: _Missed | None = None
    # Startable, but older than the newest MAX_RUNS_PER_DECISION.
    crowded: _Missed | None = None
    # Startable: the newest, oldest first.
    startable: deque[datetime] = field(default_factory=deque)
    # The walk stopped at its bound before reaching now: decide again at once.
    unfinished: bool = False
    # The latest time walked or jumped over: every time up to it is dealt with.
    position: datetime | None = None

    def start(self, scheduled: datetime) -> None:
        self.startable.append(scheduled)
        if len(self.startable) > MAX_RUNS_PER_DECISION:
            oldest = self.startable.popleft()
            self.crowded = _counted(self.crowded, oldest, oldest)


def _counted(
    missed: _Missed | None, first: datetime, last: datetime, runs: int = 1, exact: bool = True
) -> _Missed:
    """`missed` with the times from `first` to `last` (newer than those it holds) added."""
    if missed is None:
        return _Missed(first, last, runs, exact)
    missed.last = last
    missed.count += runs
    missed.exact = missed.exact and exact
    return missed


def _due_times(state: TaskState, now: datetime, dealt_with: set[datetime]) -> _Due:
    """Scheduled times due by `now`, sorted out in a bounded number of steps.

    It walks the times one by one; every WALK_STEPS it may jump ahead over
    those it would only count: to where times stop being too late to start, or
    to where the newest MAX_RUNS_PER_DECISION begin (estimated from the spacing
    of the last times walked). What it jumps over is counted exactly where the
    schedule allows (`every`), else at least. Past _MAX_WALKED times walked it
    stops where it is, and the next decision goes on from there. Times already
    dealt with (a Job or a history entry says so) are passed over.
    """
    spec = state.spec
    timeline = spec.timeline
    deadline = spec.starting_deadline
    jitter_bound = timedelta(seconds=spec.jitter_seconds + 1)
    # Every time scheduled at or before this is too late, whatever its jitter;
    # every time at or before `surely_due` is due.
    horizon, surely_due = now - deadline - jitter_bound, now - jitter_bound
    due = _Due()
    walked, jumps = 0, 0
    stretch: datetime | None = None
    times = timeline.times(state.last_schedule_time)
    while (scheduled := next(times, None)) is not None:
        fell_due = due_at(state.task.key, spec, scheduled)
        if fell_due > now:
            break
        due.position = scheduled
        if scheduled in dealt_with:
            continue
        _sort_out(due, scheduled, now - fell_due > deadline, _waited(state, scheduled))
        stretch = stretch or scheduled
        walked += 1
        if walked % WALK_STEPS:
            continue
        if walked >= _MAX_WALKED:
            due.unfinished = True
            break
        late = scheduled < horizon
        if late:
            target = horizon
        else:
            spacing = (scheduled - stretch) / WALK_STEPS
            target = min(now - 2 * MAX_RUNS_PER_DECISION * spacing, surely_due)
        stretch = None
        if target <= scheduled or jumps == _MAX_JUMPS:
            continue
        jumps += 1
        _jump(state, due, scheduled, target, late=late, now=now, dealt_with=dealt_with)
        times = timeline.times(target)
    return due


def _waited(state: TaskState, scheduled: datetime) -> bool:
    """Whether an earlier decision held this time for want of a slot."""
    return state.waiting_from is not None and scheduled >= state.waiting_from


def _sort_out(due: _Due, scheduled: datetime, late: bool, waited: bool) -> None:
    if late and waited:
        due.waited = _counted(due.waited, scheduled, scheduled)
    elif late:
        due.late = _counted(due.late, scheduled, scheduled)
    else:
        due.start(scheduled)


def _jump(
    state: TaskState,
    due: _Due,
    position: datetime,
    target: datetime,
    *,
    late: bool,
    now: datetime,
    dealt_with: set[datetime],
) -> None:
    """Count the times in (position, target] without walking them: late ones; or
    startable ones older than the newest of them, which is kept to start (with
    the older ones kept so far, counted too)."""
    timeline = state.spec.timeline
    passed = timeline.count(position, target)
    if passed is not None:
        on_timeline = [
            t for t in dealt_with if position < t <= target and timeline.next(t - _INSTANT) == t
        ]
        passed = max(0, passed - len(on_timeline))
    newest = timeline.last_until(target)
    first = timeline.next(position)
    if newest is None or first is None or newest <= position:
        return
    due.position = newest
    if late:
        if passed != 0:
            # Counted as one stretch: as waited if it begins where the waiting did.
            waited = _waited(state, first)
            missed = _counted(
                due.waited if waited else due.late, first, newest, passed or 1, passed is not None
            )
            if waited:
                due.waited = missed
            else:
                due.late = missed
        return
    # What was kept so far is older than what follows the jump.
    for kept in due.startable:
        due.crowded = _counted(due.crowded, kept, kept)
    due.startable.clear()
    older = None if passed is None else max(0, passed - (newest not in dealt_with))
    before_newest = timeline.last_until(newest - _INSTANT)
    if older != 0 and before_newest is not None and before_newest >= first:
        due.crowded = _counted(due.crowded, first, before_newest, older or 1, older is not None)
    if newest not in dealt_with:
        fell_due = due_at(state.task.key, state.spec, newest)
        late = now - fell_due > state.spec.starting_deadline
        _sort_out(due, newest, late, _waited(state, newest))


def _dealt_with(state: TaskState) -> set[datetime]:
    """Scheduled times that a Job or a history entry of the task says were dealt with
    (run, skipped, missed, replaced), whatever the cursor says: a status write can
    be lost after the Job was created."""
    return {job.run.scheduled for job in state.jobs if job.run.token is None} | {
        entry.scheduled_time
        for entry in state.history
        if entry.runs == 1 and _of_schedule(state, entry)
    }


def _of_schedule(state: TaskState, entry: HistoryEntry) -> bool:
    """Whether a history entry is of a scheduled time (not a manual or backfill run)."""
    if entry.trigger in (Trigger.MANUAL, Trigger.BACKFILL):
        return False
    # A retry of a manual or backfill run has the retry trigger, and its token's name.
    scheduled_name = job_name(state.task.name, Run(entry.scheduled_time, entry.attempt))
    return entry.job_name is None or entry.job_name == scheduled_name


def _stopped(state: TaskState) -> bool:
    """Whether stopAfterConsecutiveFailures stops the task, counting the runs that ended
    since the last status too (their Jobs say so before the history does)."""
    if state.spec.stop_after_consecutive_failures is None:
        return False
    recorded = {e.job_name for e in state.history if e.job_name} | state.recorded_jobs
    ended = [
        HistoryEntry.from_job(job, job.result)
        for job in state.jobs
        if job.result is not None and job.name not in recorded
    ]
    return stopped(state.spec, count_failures(state.consecutive_failures, ended, state.spec))


def _manual_run_known(state: TaskState, token: str) -> bool:
    """Whether the run of this run-now token exists, as a Job or in the history."""
    name = job_name(state.task.name, Run(datetime.min, trigger=Trigger.MANUAL, token=token))
    return any(job.name == name for job in state.jobs) or any(
        entry.job_name == name for entry in state.history
    )


def decide(state: TaskState, now: datetime) -> Plan:
    spec = state.spec
    plan = Plan(
        last_schedule_time=state.last_schedule_time,
        run_now_token=state.handled_run_now_token,
    )
    active = [job for job in state.jobs if job.active]

    _run_now(plan, state, now)
    if _held(plan, state, now):
        _cap(plan, state, [])  # a manual run waits for a slot too
        if plan.waiting is not None:
            plan.wake_at = now + WAITING_RECHECK
        return plan

    retries, retry_at = _retries(state, now)
    plan.create += retries

    dealt_with = _dealt_with(state)
    walked_from = plan.last_schedule_time
    due = _due_times(replace(state, last_schedule_time=walked_from), now, dealt_with)
    _record_not_started(plan, spec, due)
    # Times that fell due while no decision was taken for them (the operator down
    # or failing over, the task's reconcile late) follow missedRunPolicy; those
    # held for a slot were decided on, and only the operator's absence misses them.
    caught_up_before = max(state.since, now - CATCH_UP_AFTER)
    downtime: list[datetime] = []
    regular: list[datetime] = []
    for scheduled in due.startable:
        fell_due = due_at(state.task.key, state.spec, scheduled)
        before = state.since if _waited(state, scheduled) else caught_up_before
        (downtime if fell_due < before else regular).append(scheduled)
    newer_dealt_with = bool(downtime) and any(
        t > downtime[-1] and due_at(state.task.key, spec, t) < caught_up_before for t in dealt_with
    )
    to_run = _catch_up(plan, spec, downtime, newer_dealt_with=newer_dealt_with)
    to_run += [(t, Trigger.SCHEDULE) for t in regular]
    # Under Forbid with a run active these are skipped, not started: no slot needed.
    forbidden = spec.concurrency_policy is ConcurrencyPolicy.FORBID and bool(active)
    held = _cap(plan, state, [] if forbidden else to_run)
    for scheduled, trigger in to_run:
        if scheduled not in held:
            _start(plan, spec, active, Run(scheduled, trigger=trigger))
    if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
        # A run older than the newest still active (a replacement whose record was
        # lost with a stopped operator) is replaced now.
        newest = max(
            [j.run.scheduled for j in active if j.run.token is None]
            + [r.scheduled for r in plan.create if r.token is None],
            default=None,
        )
        if newest is not None:
            _replace(plan, active, newest, older_only=True)
    if due.position is not None:
        plan.last_schedule_time = max(plan.last_schedule_time or due.position, due.position)
    if held:
        # Not dealt with: the cursor stays before the oldest held time, and the
        # times after it are this task's business again in the next decision.
        preceding = spec.timeline.last_until(min(held) - _INSTANT)
        cursors = [t for t in (walked_from, preceding) if t is not None]
        plan.last_schedule_time = max(cursors, default=None)
    more_backfill = _backfill(plan, state, now, active)

    _wake(plan, state, now, retry_at, held, now_again=due.unfinished or more_backfill)
    return plan


def _record_not_started(plan: Plan, spec: TaskSpec, due: _Due) -> None:
    """Missed entries for the due times that will not start."""
    if due.late is not None:
        why = f"more than startingDeadlineSeconds ({spec.starting_deadline_seconds}s) late"
        plan.records.append(due.late.entry(why, "MissedStartingDeadline"))
    if due.waited is not None:
        why = (
            f"waited more than startingDeadlineSeconds ({spec.starting_deadline_seconds}s) "
            "for a slot: the operator's --max-active-runs runs were in flight"
        )
        plan.records.append(due.waited.entry(why, WAITED_FOR_SLOT))
    if due.crowded is not None:
        why = f"more than {MAX_RUNS_PER_DECISION} runs were due at once; the newest started"
        plan.records.append(due.crowded.entry(why, "TooManyRunsDue"))


def _wake(
    plan: Plan,
    state: TaskState,
    now: datetime,
    retry_at: datetime | None,
    held: set[datetime],
    *,
    now_again: bool,
) -> None:
    """The next run time to announce and when to decide again."""
    spec = state.spec
    plan.next_run_time = spec.timeline.next(plan.last_schedule_time)
    if plan.next_run_time is not None:
        plan.wake_at = due_at(state.task.key, state.spec, plan.next_run_time)
    if now_again:
        plan.wake_at = now  # the rest of what is due, in the next decision
    if retry_at is not None and (plan.wake_at is None or retry_at < plan.wake_at):
        plan.next_run_time = plan.wake_at = retry_at
    if plan.waiting is not None:
        # A freed slot wakes the task (the shell's part). Failing that, the oldest
        # held time's deadline does, to record it Missed; no sooner than a recheck,
        # so that a task of frequent runs records the times that waited too long
        # a batch at a time, not one write per time.
        recheck = now + WAITING_RECHECK
        oldest = min(held, default=None)
        fallback = recheck
        if oldest is not None:
            missed_at = due_at(state.task.key, spec, oldest) + spec.starting_deadline + _INSTANT
            fallback = max(missed_at, recheck)
        if plan.wake_at is None or plan.wake_at <= now or plan.wake_at > fallback:
            plan.wake_at = fallback


def _cap(plan: Plan, state: TaskState, to_run: list[tuple[datetime, Trigger]]) -> set[datetime]:
    """Hold the runs beyond the decision's slots (TaskState.slots), newest first: the
    scheduled times held (to stay due), with retries and a manual run dropped from
    `plan.create` (due again in the next decision). Sets `plan.waiting`."""
    if state.slots is None:
        return set()
    wanted: list[tuple[datetime, Run | None]] = [(run.scheduled, run) for run in plan.create]
    wanted += [(scheduled, None) for scheduled, _ in to_run]
    if len(wanted) <= state.slots:
        return set()
    wanted.sort(key=lambda item: item[0])
    held: set[datetime] = set()
    for scheduled, run in wanted[state.slots :]:
        if run is None:
            held.add(scheduled)
        else:
            plan.create.remove(run)
            if run.trigger is Trigger.MANUAL:
                plan.run_now_token = state.handled_run_now_token  # not handled yet
        plan.waiting = min(plan.waiting or scheduled, scheduled)
    return held


def _backfill(plan: Plan, state: TaskState, now: datetime, active: list[JobView]) -> bool:
    """Start the backfill's next runs, after this decision's own (a scheduled run
    goes first); whether more of it can start at once."""
    raw = state.backfill_request
    if raw is None:
        return False
    progress = state.backfill
    try:
        request = parse_request(raw)
    except BadRequest as error:
        # Named by the value: the same mistake is reported once.
        identity = "invalid-" + hashlib.sha256(raw.encode()).hexdigest()[:10]
        if progress is None or progress.token != identity:
            why = f"metadata.annotations[{ANNOTATION_BACKFILL}]: {error}"
            plan.backfill = refused(identity, why)
        return False
    if progress is None or progress.token != request.token:
        count, refusal = check(state.spec.schedule, request, now)
        if refusal is not None:
            plan.backfill = refused(request.token, refusal, request)
            return False
        progress = plan.backfill = Backfill(
            request.token, BackfillState.RUNNING, request.start, request.end, runs=count
        )
    allow = state.spec.concurrency_policy is ConcurrencyPolicy.ALLOW
    if allow:
        limit = max(0, MAX_RUNS_PER_DECISION - len(plan.create))
    else:
        limit = 0 if active or plan.create else 1  # one at a time, when none is active
    capped = state.slots is not None and state.slots - len(plan.create) < limit
    if capped:
        limit = max(0, (state.slots or 0) - len(plan.create))
    known = {job.name for job in state.jobs} | {e.job_name for e in state.history if e.job_name}
    started, advanced = next_runs(
        state.spec.schedule, progress, lambda run: job_name(state.task.name, run) in known, limit
    )
    plan.create += started
    if advanced != progress:
        plan.backfill = advanced
    more = advanced.state is BackfillState.RUNNING
    if capped and more:
        plan.waiting = min(plan.waiting or now, now)
        return False  # a freed slot wakes it
    return allow and more


def _run_now(plan: Plan, state: TaskState, now: datetime) -> None:
    """Manual runs happen whatever the schedule, suspend or concurrency say, once
    per token: a token used before whose run is still known runs no more."""
    token = state.run_now_token
    if not token or token == state.handled_run_now_token:
        return
    if not _manual_run_known(state, token):
        plan.create.append(Run(now.replace(microsecond=0), trigger=Trigger.MANUAL, token=token))
    plan.run_now_token = token


def _held(plan: Plan, state: TaskState, now: datetime) -> bool:
    """Whether the task is suspended or stopped: no scheduled run then. The times that
    pass meanwhile (and until it resumed, if it just did) are passed over."""
    if state.spec.suspend or state.was_suspended:
        _pass_suspended(plan, state, now)
        if state.spec.suspend:
            return True
    stopped_now = _stopped(state)
    if stopped_now or state.was_stopped:
        # Stopped until its spec changes or it is resumed; then it goes on from now.
        _pass_suspended(plan, replace(state, spec_changed_at=None), now)
    return stopped_now


def _pass_suspended(plan: Plan, state: TaskState, now: datetime) -> None:
    """Move the cursor over the times that passed while the task was suspended: until
    now; or, for a task resumed while no operator acted, until its spec changed (when
    known), so that the times after that follow missedRunPolicy."""
    until = now
    if not state.spec.suspend and state.spec_changed_at is not None:
        until = min(now, state.spec_changed_at)
    passed = state.spec.timeline.last_until(until)
    if passed is not None and (plan.last_schedule_time or passed) <= passed:
        plan.last_schedule_time = passed


def _retries(state: TaskState, now: datetime) -> tuple[list[Run], datetime | None]:
    """Retry attempts due now, and when the next one falls due.

    The latest attempt of each run decides: if it failed or timed out and the
    limit allows another, the next attempt starts `backoff.delay(attempt)`
    after it ended. A run whose Job the API refused is not retried.

    Retries obey concurrencyPolicy like any run: under Forbid one waits while a
    run of the task is active (its end wakes the task); under Replace only the
    newest run is retried, a newer one having replaced it. Manual runs ignore
    the policy, and so do their retries.
    """
    retry = state.spec.retry
    if retry.limit == 0:
        return [], None
    policy = state.spec.concurrency_policy
    if policy is ConcurrencyPolicy.FORBID and any(job.active for job in state.jobs):
        return [], None
    newest = max(
        [j.run.scheduled for j in state.jobs if j.run.token is None]
        + [e.scheduled_time for e in state.history if _of_schedule(state, e)],
        default=None,
    )
    latest: dict[tuple[datetime, str | None], tuple[Run, Result | None, datetime]] = {}
    attempts = [
        (Run(e.scheduled_time, e.attempt, e.trigger), e.result, e.completion_time)
        for e in state.history
        # Scheduled runs only: the retry of a manual or backfill run is named by its
        # token, kept on its Job.
        if e.job_name == job_name(state.task.name, Run(e.scheduled_time, e.attempt))
    ] + [(j.run, j.result, j.completion_time) for j in state.jobs]
    for run, result, ended in attempts:
        key = (run.scheduled, run.token)
        if key not in latest or run.attempt >= latest[key][0].attempt:
            latest[key] = (run, result, ended or run.scheduled)
    due: list[Run] = []
    later: datetime | None = None
    for run, result, ended in latest.values():
        if result not in (Result.FAILED, Result.TIMED_OUT) or run.attempt > retry.limit:
            continue
        if policy is ConcurrencyPolicy.REPLACE and run.token is None and newest != run.scheduled:
            continue
        at = ended + retry.backoff.delay(run.attempt + 1)
        if at <= now:
            due.append(replace(run, attempt=run.attempt + 1, trigger=Trigger.RETRY))
        elif later is None or at < later:
            later = at
    due.sort(key=lambda r: (r.scheduled, r.attempt))
    # Backfill runs obey the policy too (unlike manual ones).
    scheduled_due = [run for run in due if run.token is None or run.backfill]
    if policy is ConcurrencyPolicy.FORBID and len(scheduled_due) > 1:
        # One at a time: the oldest now, the next once it has ended.
        due = [run for run in due if run not in scheduled_due or run is scheduled_due[0]]
    return due, later


def _catch_up(
    plan: Plan, spec: TaskSpec, downtime: list[datetime], *, newer_dealt_with: bool
) -> list[tuple[datetime, Trigger]]:
    """The runs missedRunPolicy starts for times that fell due while no decision was taken
    for them; `newer_dealt_with`: a later one of them was dealt with already."""
    if not downtime:
        return []
    policy = spec.missed_run_policy
    if policy is MissedRunPolicy.RUN_ALL:
        return [(t, Trigger.CATCH_UP) for t in downtime]
    if policy is MissedRunPolicy.RUN_LATEST:
        # The latest may be dealt with already (its Job exists): then none of these is it.
        latest = [] if newer_dealt_with else downtime[-1:]
        if len(downtime) > len(latest):
            why = "missedRunPolicy RunLatest runs only the latest"
            missed = downtime[: len(downtime) - len(latest)]
            plan.records.append(_Missed.of(missed).entry(why, "MissedRunPolicy"))
        return [(t, Trigger.CATCH_UP) for t in latest]
    why = "missedRunPolicy Skip runs none of the times missed"
    plan.records.append(_Missed.of(downtime).entry(why, "MissedRunPolicy"))
    return []


def _replace(plan: Plan, active: list[JobView], newer: datetime, older_only: bool = False) -> None:
    """Delete the active scheduled runs (older than `newer`, with `older_only`) for the
    run at `newer`. Manual runs (and their retries) are outside the policy."""
    for job in active:
        if job.run.token is not None or job in plan.delete:
            continue
        if older_only and job.run.scheduled >= newer:
            continue
        plan.delete.append(job)
        plan.records.append(
            HistoryEntry(
                scheduled_time=job.run.scheduled,
                result=Result.REPLACED,
                job_name=job.name,
                attempt=job.run.attempt,
                trigger=job.run.trigger,
                start_time=job.start_time,
                completion_time=newer,
                reason="ConcurrencyPolicyReplace",
                message=f"deleted for the run at {rfc3339(newer)}",
            )
        )


def _unstarted(run: Run, result: Result, reason: str, message: str) -> HistoryEntry:
    """The history entry of a run that concurrencyPolicy kept from starting."""
    return HistoryEntry(
        scheduled_time=run.scheduled,
        result=result,
        trigger=run.trigger,
        reason=reason,
        message=message,
    )


def _start(plan: Plan, spec: TaskSpec, active: list[JobView], run: Run) -> None:
    running = [job.name for job in active] + [
        f"run at {rfc3339(r.scheduled)}" for r in plan.create if r.trigger is not Trigger.MANUAL
    ]
    policy = spec.concurrency_policy
    if policy is ConcurrencyPolicy.FORBID and running:
        why = f"not started: {', '.join(running)} still running"
        plan.records.append(_unstarted(run, Result.SKIPPED, "ConcurrencyPolicyForbid", why))
        return
    if policy is ConcurrencyPolicy.REPLACE:
        newer = [j for j in active if j.run.token is None and j.run.scheduled > run.scheduled]
        if newer:
            why = f"not started: {newer[0].name}, a newer run, is active"
            plan.records.append(_unstarted(run, Result.REPLACED, "ConcurrencyPolicyReplace", why))
            return
        _replace(plan, active, run.scheduled)
        # Scheduled runs only: manual and backfill runs (and their retries) stay.
        superseded = [r for r in plan.create if r.token is None]
        for earlier in superseded:
            plan.create.remove(earlier)
            why = f"superseded by the run at {rfc3339(run.scheduled)}"
            plan.records.append(
                _unstarted(earlier, Result.REPLACED, "ConcurrencyPolicyReplace", why)
            )
    plan.create.append(run)
