"""One task's reconcile: read memory, ask the pure core, carry out what it decided.

A reconcile reads only the cache, asks the core what to do (`decide`,
`render_job`, `reduce_status`), creates and deletes Jobs, and hands the status
it decided to the record step (`shell/record.py`). What it decides goes into
memory at once, so the next decision never works from an older state than the
operator's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from taskmaster.core.decide import Plan, TaskState, decide, due_at
from taskmaster.core.names import Run, job_name
from taskmaster.core.render import render_job
from taskmaster.core.spec import TaskSpec
from taskmaster.core.status import HistoryEntry, JobView, Observation, Result, read_previous
from taskmaster.core.times import Clock, parse_time, rfc3339
from taskmaster.shell.api import Api, Fence
from taskmaster.shell.cache import Cache, Task
from taskmaster.shell.kube import ApiError
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.record import Recorder
from taskmaster.shell.slots import RunSlots
from taskmaster.shell.timebox import TIME_BOX_SECONDS, Overrun, time_box

logger = logging.getLogger(__name__)

# A task that waits for a slot again says so again after this long, not sooner.
_WAITING_REPORTED_EVERY = timedelta(minutes=10)


def _timestamp(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


class Reconciler:
    """`wake(key, at)` sets when the task is reconciled next (None: on its next event)."""

    def __init__(
        self,
        kube: Api,
        metrics: Metrics,
        cache: Cache,
        recorder: Recorder,
        slots: RunSlots,
        *,
        fence: Fence,
        clock: Clock,
        wake: Callable[[str, datetime | None], None],
        worker_image: str | None,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.cache = cache
        self.recorder = recorder
        self.slots = slots
        self.fence = fence
        self.clock = clock
        self.wake = wake
        self.worker_image = worker_image
        # When this replica began to act: what fell due before is a missed run.
        self.since = clock()

    async def reconcile(self, key: str) -> None:
        task = self.cache.tasks.get(key)
        if task is None:
            return
        if task.held is not None:
            generation, until = task.held
            if generation == task.generation and self.clock().timestamp() < until:
                return  # its back-off wakes it
            task.held = None
        if task.parse(self.clock()):
            self.metrics.overruns.labels("parse").inc()
            logger.warning("%s: parsing the spec ran past its time box; set aside", key)
        now = self.clock()
        jobs = self.cache.jobs_of(key)
        if task.spec is None:
            invalid = Observation(
                None, list(jobs.values()), now, task.generation, invalid=task.invalid
            )
            self.recorder.decide_status(task, invalid)
            self._waits(task, None)
            return
        status = task.status
        cursor = parse_time(status.get("lastScheduleTime"))
        try:
            with time_box(TIME_BOX_SECONDS):
                # Inside the box: reading the history has no bound of its own.
                previous = read_previous(
                    status, generation=task.generation, resume_token=task.resume_token
                )
                plan = decide(
                    TaskState(
                        task=task.ref,
                        spec=task.spec,
                        jobs=list(jobs.values()),
                        last_schedule_time=previous.last_schedule_time,
                        since=self.since,
                        run_now_token=task.run_now_token,
                        handled_run_now_token=previous.handled_run_now_token,
                        history=previous.history,
                        was_suspended=previous.was_suspended,
                        spec_changed_at=task.spec_changed_at,
                        consecutive_failures=previous.consecutive_failures,
                        was_stopped=previous.was_stopped,
                        recorded_jobs=task.recorded_jobs,
                        backfill_request=task.backfill_request,
                        backfill=previous.backfill,
                        slots=self.slots.free(),
                        waiting_from=task.waiting_from,
                    ),
                    now,
                )
        except Overrun:
            self._overran(task, jobs, now, cursor, status)
            return
        records = list(plan.records) + await self._start_all(task, task.spec, plan.create)
        jobs = self.cache.jobs_of(key)  # with those just created
        self._waits(task, plan.waiting)
        # Replaced Jobs go once the status recording their replacement is written
        # (`record`): deleted before, with the process stopping in between, a run
        # would be gone with no record that it ran, and run again.
        replaced = []
        for job in plan.delete:
            current = jobs.get(job.name, job)
            if current.result is not None:
                # It ended while the runs were created: its result is its record.
                records = [r for r in records if r.job_name != job.name]
                continue
            self.cache.put_job(key, job.name, replace(current, deleting=True))
            replaced.append(job.name)
        ns = task.ref.namespace
        observed_jobs = [job.with_pod(self.cache.pods.get((ns, job.name))) for job in jobs.values()]
        self.recorder.decide_status(
            task,
            Observation(
                spec=task.spec,
                jobs=observed_jobs,
                now=now,
                generation=task.generation,
                records=records,
                last_schedule_time=plan.last_schedule_time,
                next_run_time=plan.next_run_time,
                run_now_token=plan.run_now_token,
                consecutive_failures=previous.consecutive_failures,
                resume_token=task.resume_token,
                backfill=plan.backfill.to_status() if plan.backfill else None,
            ),
            acted=bool(plan.create or plan.delete),
        )
        if replaced:
            self.recorder.unwritten(task).replaced += replaced
        if task.unwritten is None:
            await self.recorder.expire(task, observed_jobs, task.status)
        task.failures = 0
        self.observe(task, plan, jobs.values())
        self.wake(key, plan.wake_at)

    async def _start_all(self, task: Task, spec: TaskSpec, runs: list[Run]) -> list[HistoryEntry]:
        """Create the runs' Jobs; each holds a slot from the decision until answered,
        so that the reconciles in flight at once share the free slots."""
        records: list[HistoryEntry] = []
        pending = len(runs)
        self.slots.reserved += pending
        try:
            for run in runs:
                records += await self._start(task, spec, run)
                pending -= 1
                self.slots.reserved -= 1
        finally:
            self.slots.reserved -= pending
        return records

    def _waits(self, task: Task, waiting: datetime | None) -> None:
        """Keep whether the task's runs wait for a slot; an Event when they begin to (at
        most every few minutes: under overload, a task of frequent runs waits, misses
        and waits again, and every Event is a write to the API server)."""
        now = self.clock()
        reported = task.waiting_reported
        if (
            waiting is not None
            and task.waiting_from is None
            and (reported is None or now - reported >= _WAITING_REPORTED_EVERY)
        ):
            task.waiting_reported = now
            deadline = task.spec.starting_deadline_seconds if task.spec else 0
            self.recorder.report(
                task,
                "Warning",
                "WaitingForSlot",
                f"runs wait for a slot: {self.slots.in_flight} runs in flight, the operator's "
                f"--max-active-runs is {self.slots.cap}; the oldest, at {rfc3339(waiting)}, "
                f"is Missed if it waits more than startingDeadlineSeconds ({deadline}s)",
                "Wait",
            )
        task.waiting_from = waiting
        self.slots.decided(task.ref.key, None if waiting is None else waiting.timestamp())

    def _overran(
        self,
        task: Task,
        jobs: Mapping[str, JobView],
        now: datetime,
        cursor: datetime | None,
        status: Mapping[str, Any],
    ) -> None:
        """A decision ran past its time box: report the task Degraded, decide again later.

        Nothing was decided, so the cursor, the next run and the handled run-now
        token stay as they were; the retry backs off like an API error, so a
        task that keeps overrunning costs the loop a little, never its schedule.
        """
        self.metrics.overruns.labels("decide").inc()
        why = f"deciding what to run took longer than {TIME_BOX_SECONDS:g}s and was abandoned"
        logger.warning("%s: %s", task.ref.key, why)
        self.recorder.decide_status(
            task,
            Observation(
                spec=task.spec,
                jobs=list(jobs.values()),
                now=now,
                generation=task.generation,
                last_schedule_time=cursor,
                next_run_time=parse_time(status.get("nextRunTime")),
                run_now_token=status.get("runNowToken"),
                overrun=why,
            ),
        )
        self.recorder.report(task, "Warning", "DecisionOverrun", why, "Decide")
        # Until the back-off is over, events about the task (its own writes,
        # a user's edits of its metadata) do not make it decide again.
        until = self.clock() + timedelta(seconds=task.back_off())
        task.held = (task.generation, until.timestamp())
        self.wake(task.ref.key, until)

    async def _start(self, task: Task, spec: TaskSpec, run: Run) -> list[HistoryEntry]:
        """Create the run's Job; a spec the API refuses is a failed run, not a retry loop."""
        name = job_name(task.ref.name, run)
        self.fence.check(f"creating Job {name}")
        try:
            manifest = render_job(task.ref, spec, run, worker_image=self.worker_image)
            created = await self.kube.create_job(manifest)
        except (ApiError, ValueError) as error:
            if isinstance(error, ApiError) and (error.status >= 500 or error.status == 429):
                raise
            message = f"Job {name} could not be created: {error}"
            self.recorder.report(task, "Warning", "JobCreateFailed", message, "CreateJob")
            return [
                HistoryEntry(
                    scheduled_time=run.scheduled,
                    result=Result.FAILED,
                    attempt=run.attempt,
                    trigger=run.trigger,
                    reason="JobCreateFailed",
                    message=message,
                )
            ]
        if not created:
            return []  # it exists: this run already started (exactly once)
        view = JobView.from_job(manifest)
        if view is not None and name not in self.cache.jobs_of(task.ref.key):
            # As created; unless the watch was quicker and already told more.
            self.cache.put_job(task.ref.key, name, view)
        due = run.scheduled if run.token else due_at(task.ref.key, spec, run.scheduled)
        lag = (self.clock() - due).total_seconds()
        self.metrics.fire_lag.labels(run.trigger.value).observe(max(lag, 0.0))
        self.metrics.tasks.of(task.ref.namespace, task.ref.name).count_started(run.trigger.value)
        self.recorder.report(
            task,
            "Normal",
            "JobCreated",
            f"created Job {name} for the {run.trigger.value} run at {rfc3339(run.scheduled)}",
            "CreateJob",
        )
        return []

    def observe(self, task: Task, plan: Plan, jobs: Iterable[JobView]) -> None:
        series = self.metrics.tasks.of(task.ref.namespace, task.ref.name)
        series.active = sum(1 for job in jobs if job.active)
        # No series rather than a stale time: "overdue" alerts compare it with now.
        series.next_schedule_time = _timestamp(plan.next_run_time)
        series.last_schedule_time = _timestamp(plan.last_schedule_time)
