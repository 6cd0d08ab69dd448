"""A deterministic simulation of the operator driving the pure core, for thousands of tasks.

It does what the shell does, on an injected clock and a simulated API: decide
(`decide`), create and delete Jobs, reduce the status (`reduce_status`), write
it, expire Jobs (`expired_jobs`), and decide again at the wake-up. Around that
it injects what happens to a real operator: reconciles late by a little or by
a lot, status writes lost (the next replica decides from the last written one),
restarts and failovers, Jobs that fail and are retried, suspend and resume,
spec edits, and run-now tokens, some reused. After every step it checks the
contract's invariants; a violation raises `Violation` naming the seed, the
task and the step, so that a failing seed becomes a regression test.

Invariants:
- a Job name (task, scheduled time, attempt) is created at most once, ever:
  once it is gone, creating it again would be a second run;
- each scheduled time up to a task's cursor is accounted for exactly once: run
  (a first-attempt Job), skipped, missed, or replaced before it started; times
  passed while suspended are accounted for not at all, and never twice;
- under Forbid a scheduled run starts only while no other is active;
- with a cap on runs in flight (the operator's --max-active-runs), no decision
  starts runs that take the active runs of all tasks past it;
- the counters of the written status equal the history entries recorded;
- no decision takes more than a bounded time.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmaster.core.decide import TaskState, decide
from taskmaster.core.names import Run, TaskRef, Trigger, job_name
from taskmaster.core.spec import ConcurrencyPolicy, TaskSpec, parse_spec
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    Result,
    expired_jobs,
    parse_time,
    read_history,
    reduce_status,
)

START = datetime(2026, 3, 27, tzinfo=UTC)  # a DST change in Europe follows
# The longest one decision may take here (the shell's time box is 2 s of CPU).
DECISION_BUDGET_SECONDS = 0.5


class Violation(AssertionError):
    """An invariant of the contract does not hold."""


@dataclass
class SimJob:
    view: JobView
    ends_at: datetime
    fails: bool


@dataclass
class SimTask:
    ref: TaskRef
    raw: dict[str, Any]
    spec: TaskSpec
    # The status as written to the API, and as this replica decided it (unwritten included).
    written: dict[str, Any] = field(default_factory=dict)
    decided: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, SimJob] = field(default_factory=dict)
    token: str | None = None
    spec_changed_at: datetime | None = None
    # History entries written (each once), and those decided but not written yet.
    recorded: list[HistoryEntry] = field(default_factory=list)
    pending: list[HistoryEntry] = field(default_factory=list)
    # Replaced Jobs: deleted once the status recording the replacement is written.
    replaced: list[str] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    was_ever_suspended: bool = False
    next_reconcile: datetime | None = None
    # The oldest run held for want of a slot (the shell's memory of Plan.waiting).
    waiting_from: datetime | None = None
    # What happened to the task, for the report of a violation.
    log: list[str] = field(default_factory=list)


@dataclass
class Faults:
    """How often each fault happens (per reconcile, unless said otherwise)."""

    late: float = 0.03  # a reconcile comes up to 20 minutes late
    lost_write: float = 0.05  # the status write fails; a restart before the next loses it
    restart: float = 0.0005  # the operator restarts (or fails over): memory is lost
    suspend: float = 0.002  # the task is suspended or resumed
    edit: float = 0.001  # the spec changes (its concurrency policy)
    run_now: float = 0.002  # a run-now token is set (a third of them reused)


@dataclass
class Tally:
    steps: int = 0
    decisions: int = 0
    jobs: int = 0
    late: int = 0
    lost_writes: int = 0
    restarts: int = 0
    suspends: int = 0
    edits: int = 0
    run_nows: int = 0
    # Decisions that held runs for want of a slot; times Missed for having waited.
    waits: int = 0
    missed_waiting: int = 0
    slowest_decision_s: float = 0.0


SCHEDULES = [
    {"every": "7m"},
    {"every": "15m"},
    {"every": "1h"},
    {"every": "2h", "startAt": "2026-03-27T00:00:30Z"},
    {"schedule": "*/10 * * * *"},
    {"schedule": "H * * * *"},
    {"schedule": "30 2 * * *", "timeZone": "Europe/Berlin"},
    {"schedule": "0 */3 * * *", "timeZone": "America/New_York"},
    {"schedule": "H H * * *"},
    {"every": "5m", "maxRuns": 40},
    {"every": "20m", "endAt": "2026-03-28T12:00:00Z"},
]


def _spec(draw: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {
        **draw.choice(SCHEDULES),
        "concurrencyPolicy": draw.choice(["Allow", "Forbid", "Replace"]),
        "missedRunPolicy": draw.choice(["RunLatest", "RunAll", "Skip"]),
        "startingDeadlineSeconds": draw.choice([10, 60, 300, 3600]),
        "historyLimit": draw.choice([0, 3, 10, 100]),
        "successfulJobsHistoryLimit": draw.choice([0, 1, 3]),
        "failedJobsHistoryLimit": draw.choice([0, 1]),
        "task": {"container": {"image": "busybox"}},
    }
    if draw.random() < 0.3:
        spec["jitterSeconds"] = draw.choice([5, 60, 600])
    if draw.random() < 0.4:
        spec["retry"] = {
            "limit": draw.choice([1, 2]),
            "backoff": {"initialSeconds": draw.choice([10, 300, 900]), "factor": 2},
        }
    return spec


class Simulation:
    def __init__(
        self,
        seed: int,
        tasks: int,
        days: float,
        faults: Faults | None = None,
        max_active_runs: int | None = None,
    ) -> None:
        self.seed = seed
        self.max_active_runs = max_active_runs
        self.draw = random.Random(seed)  # noqa: S311 - reproducible, not a secret
        self.faults = faults or Faults()
        self.now = START
        self.end = START + timedelta(days=days)
        self.since = START
        self.tally = Tally()
        self._events: list[tuple[datetime, int, str, str]] = []
        self._seq = itertools.count()
        self.tasks: dict[str, SimTask] = {}
        for index in range(tasks):
            name = f"task-{index}"
            raw = _spec(self.draw)
            ref = TaskRef("sim", name, f"uid-{index}")
            spec = parse_spec(raw, namespace="sim", name=name, created=START)
            self.tasks[name] = SimTask(ref, raw, spec)
            self._at(START + timedelta(seconds=self.draw.uniform(0, 5)), "reconcile", name)

    # -- the event queue --------------------------------------------------------------

    def _at(self, when: datetime, kind: str, name: str) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, name))

    def run(self) -> Tally:
        while self._events:
            when, _, kind, name = heapq.heappop(self._events)
            if when > self.end:
                break
            self.now = max(self.now, when)
            self.tally.steps += 1
            if kind == "finish":
                self._finish(name)
            elif kind == "reconcile":
                task = self.tasks[name]
                if task.next_reconcile is not None and when < task.next_reconcile:
                    continue  # superseded by a later wake-up
                self._faults(task)
                self._reconcile(task)
        for task in self.tasks.values():
            self._check_accounting(task)
        return self.tally

    # -- what happens around the operator --------------------------------------------

    def _faults(self, task: SimTask) -> None:
        draw, faults = self.draw, self.faults
        if draw.random() < faults.restart:
            self.tally.restarts += 1
            self.since = self.now
            for each in self.tasks.values():
                each.decided, each.pending = dict(each.written), []
                each.waiting_from = None
                for name in each.replaced:  # still running: active again
                    if name in each.jobs:
                        view = each.jobs[name].view
                        each.jobs[name].view = JobView(
                            view.name, view.run, view.start_time, view.completion_time, view.result
                        )
                each.replaced = []
                each.log.append(f"{self.now:%d %H:%M:%S} restart")
        if draw.random() < faults.suspend:
            self.tally.suspends += 1
            task.raw = {**task.raw, "suspend": not task.raw.get("suspend", False)}
            task.was_ever_suspended = True
            self._edited(task)
        if draw.random() < faults.edit:
            self.tally.edits += 1
            policy = draw.choice(["Allow", "Forbid", "Replace"])
            task.raw = {**task.raw, "concurrencyPolicy": policy}
            self._edited(task)
        if draw.random() < faults.run_now:
            self.tally.run_nows += 1
            reused = task.token is not None and draw.random() < 0.3
            task.token = task.token if reused else f"token-{self.tally.run_nows}"

    def _edited(self, task: SimTask) -> None:
        task.spec = parse_spec(task.raw, namespace="sim", name=task.ref.name, created=START)
        task.spec_changed_at = self.now.replace(microsecond=0)

    def _finish(self, key: str) -> None:
        name, job_key = key.split("/", 1)
        task = self.tasks[name]
        job = task.jobs.get(job_key)
        if job is None or job.view.result is not None:
            return
        result = Result.FAILED if job.fails else Result.SUCCEEDED
        task.log.append(f"{self.now:%d %H:%M:%S} {job_key} {result.value}")
        job.view = JobView(job.view.name, job.view.run, job.view.start_time, job.ends_at, result)
        self._wake(task, self.now + timedelta(seconds=self.draw.uniform(0, 1)))
        # A slot freed: the task waiting longest for one decides again.
        waiting = [t for t in self.tasks.values() if t.waiting_from is not None]
        if waiting:
            oldest = min(waiting, key=lambda t: t.waiting_from or self.now)
            self._wake(oldest, self.now + timedelta(seconds=self.draw.uniform(0, 1)))

    def _active_runs(self) -> int:
        return sum(job.view.active for task in self.tasks.values() for job in task.jobs.values())

    def _wake(self, task: SimTask, when: datetime) -> None:
        if task.next_reconcile is None or when < task.next_reconcile or when > self.now:
            task.next_reconcile = when
            self._at(when, "reconcile", task.ref.name)

    # -- the operator ---------------------------------------------------------------

    def _reconcile(self, task: SimTask) -> None:
        task.next_reconcile = None
        status = task.decided
        conditions = status.get("conditions") or ()
        state = TaskState(
            task=task.ref,
            spec=task.spec,
            jobs=[job.view for job in task.jobs.values()],
            last_schedule_time=parse_time(status.get("lastScheduleTime")),
            since=self.since,
            run_now_token=task.token,
            handled_run_now_token=status.get("runNowToken"),
            history=read_history(status),
            was_suspended=any(
                c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions
            ),
            spec_changed_at=task.spec_changed_at,
            slots=None
            if self.max_active_runs is None
            else max(0, self.max_active_runs - self._active_runs()),
            waiting_from=task.waiting_from,
        )
        # Without the collector: a full collection of the suite's garbage (Hypothesis'
        # from other tests in the same process) can take a second, and is not decide's.
        gc.disable()
        try:
            started = time.process_time()
            plan = decide(state, self.now)
            elapsed = time.process_time() - started
        finally:
            gc.enable()
        self.tally.decisions += 1
        self.tally.slowest_decision_s = max(self.tally.slowest_decision_s, elapsed)
        if elapsed > DECISION_BUDGET_SECONDS:
            self._violation(task, f"a decision took {elapsed:.3f}s")
        task.log.append(
            f"{self.now:%d %H:%M:%S} decide cursor={state.last_schedule_time} "
            f"create={[job_name(task.ref.name, r) for r in plan.create]} "
            f"delete={[v.name for v in plan.delete]} "
            f"records={[(r.scheduled_time.time(), r.result.value, r.runs) for r in plan.records]}"
        )
        active_before = self._active(task)
        for run in plan.create:
            self._create(task, run)
        task.waiting_from = plan.waiting
        self.tally.waits += plan.waiting is not None
        self.tally.missed_waiting += sum(
            r.runs for r in plan.records if r.reason == "MaxActiveRuns"
        )
        # (Replaced Jobs count again after a restart: only a decision's starts are judged.)
        over = self.max_active_runs is not None and self._active_runs() > self.max_active_runs
        if over and plan.create:
            self._violation(task, f"started runs to {self._active_runs()} in flight, over the cap")
        for view in plan.delete:
            if view.name in task.jobs:
                job = task.jobs[view.name]
                job.view = JobView(
                    view.name,
                    view.run,
                    view.start_time,
                    view.completion_time,
                    view.result,
                    deleting=True,
                )
                task.replaced.append(view.name)
        self._check_forbid(task, active_before)
        update = reduce_status(
            status,
            Observation(
                spec=task.spec,
                jobs=[job.view for job in task.jobs.values()],
                now=self.now,
                generation=1,
                records=plan.records,
                last_schedule_time=plan.last_schedule_time,
                next_run_time=plan.next_run_time,
                run_now_token=plan.run_now_token,
            ),
        )
        task.pending += update.recorded
        task.decided = {k: v for k, v in {**status, **update.status}.items() if v is not None}
        if self.draw.random() < self.faults.lost_write:
            self.tally.lost_writes += 1
            task.log.append("  status write lost")
        else:
            task.written = dict(task.decided)
            task.recorded += task.pending
            task.pending = []
            for name in task.replaced:
                task.jobs.pop(name, None)
            task.replaced = []
            self._check_counters(task)
            for name in expired_jobs(
                [job.view for job in task.jobs.values()],
                task.spec,
                task.written.get("history") or [],
            ):
                task.log.append(f"  expired {name}")
                task.jobs.pop(name, None)
        if plan.wake_at is not None:
            lag = self.draw.uniform(0, 1.5)
            if self.draw.random() < self.faults.late:
                self.tally.late += 1
                lag += self.draw.uniform(0, 1200)
            self._wake(task, max(plan.wake_at, self.now) + timedelta(seconds=lag))

    def _create(self, task: SimTask, run: Run) -> None:
        name = job_name(task.ref.name, run)
        if name in task.jobs:
            return  # AlreadyExists: the run exists, exactly once
        if name in task.created:
            self._violation(task, f"Job {name} created again after it was deleted")
        task.created.add(name)
        self.tally.jobs += 1
        fails = self.draw.random() < 0.2
        ends_at = self.now + timedelta(seconds=self.draw.choice([1, 30, 300, 1800]))
        view = JobView(name, run, start_time=self.now)
        task.jobs[name] = SimJob(view, ends_at, fails)
        self._at(ends_at, "finish", f"{task.ref.name}/{name}")

    # -- the invariants -------------------------------------------------------------

    def _violation(self, task: SimTask, what: str) -> None:
        story = "\n".join(task.log[-25:])
        raise Violation(
            f"seed {self.seed}, {task.ref.name} at {self.now}: {what} ({task.raw})\n{story}"
        )

    @staticmethod
    def _active(task: SimTask) -> set[str]:
        return {
            job.view.name
            for job in task.jobs.values()
            # Manual runs and their retries are outside the policy; backfill runs are not.
            if job.view.active and (job.view.run.token is None or job.view.run.backfill)
        }

    def _check_forbid(self, task: SimTask, active_before: set[str]) -> None:
        """Under Forbid, a scheduled run starts only while none is active (runs started
        before the policy became Forbid may still be)."""
        if task.spec.concurrency_policy is not ConcurrencyPolicy.FORBID:
            return
        started = self._active(task) - active_before
        if started and (active_before or len(started) > 1):
            self._violation(task, f"Forbid started {started} beside {active_before}")

    def _check_counters(self, task: SimTask) -> None:
        tally = {"succeededRuns": 0, "failedRuns": 0, "missedRuns": 0}
        for entry in task.recorded:
            if entry.result is Result.SUCCEEDED:
                tally["succeededRuns"] += 1
            elif entry.result in (Result.FAILED, Result.TIMED_OUT):
                tally["failedRuns"] += 1
            elif entry.result is Result.MISSED:
                tally["missedRuns"] += entry.runs
        written = {name: int(task.written.get(name) or 0) for name in tally}
        if written != tally:
            self._violation(task, f"counters {written} differ from the history written {tally}")

    def _check_accounting(self, task: SimTask) -> None:
        cursor = parse_time(task.written.get("lastScheduleTime"))
        if cursor is None:
            return
        times = list(itertools.takewhile(lambda t: t <= cursor, task.spec.timeline.times()))
        runs = Counter(
            scheduled
            for name in task.created
            if (scheduled := _scheduled_of_first_attempt(task, name)) is not None
            and scheduled <= cursor
        )
        accounted: Counter[datetime] = Counter(runs)
        missed_runs = 0
        for entry in task.recorded:
            if entry.trigger in (Trigger.MANUAL, Trigger.RETRY):
                continue  # runs of no scheduled time, or later attempts of one
            if entry.scheduled_time > cursor:
                continue
            if entry.result is Result.SKIPPED or (
                entry.result is Result.REPLACED and entry.job_name is None
            ):
                accounted[entry.scheduled_time] += 1
            elif entry.result is Result.MISSED:
                missed_runs += entry.runs
        twice = [t for t, n in accounted.items() if n > 1]
        if twice:
            self._violation(task, f"times accounted for more than once: {twice[:3]}")
        total = sum(accounted.values()) + missed_runs
        if task.was_ever_suspended:
            if total > len(times):
                self._violation(task, f"{total} accountings for {len(times)} times")
        elif total != len(times):
            self._violation(task, f"{total} accountings for {len(times)} times up to {cursor}")


def _scheduled_of_first_attempt(task: SimTask, name: str) -> datetime | None:
    """The scheduled time of a first-attempt scheduled Job this simulation created."""
    base = f"{task.ref.name}-"
    rest = name.removeprefix(base)
    if not rest.isdigit():
        return None  # a manual run (-m<hash>) or a retry (-<time>-<attempt>)
    return datetime.fromtimestamp(int(rest), UTC)
