"""The scheduler: one in-memory timer queue for every task, and the reconcile that acts.

Watch events (`shell/watch.py`) keep `Scheduler.tasks` and `Scheduler.jobs` current
and queue a reconcile of the task; one loop turns due wake-ups into reconciles
and runs what is queued, most urgent first, each task at most once at a time.
A reconcile reads only memory, asks the pure core what to do (`decide`,
`render_job`, `reduce_status`) and carries it out. What it decides goes into
memory at once, so the next decision never works from an older state than the
operator's own.

A reconcile creates and deletes Jobs itself, but leaves the status it decided
(and the Events reporting it) to a separate step, `record`, queued after the
runs that are due: when thousands of runs fall due in the same second, their
Jobs are created first and the bookkeeping follows, instead of every Job
waiting on the writes of those before it. Jobs are deleted as expired only
once the history that replaces them is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from taskmaster.core.backfill import Backfill, backfill_events
from taskmaster.core.decide import Plan, TaskState, decide, due_at
from taskmaster.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_RESUME,
    ANNOTATION_RUN_NOW,
    KIND,
    Run,
    TaskRef,
    job_name,
)
from taskmaster.core.render import render_job
from taskmaster.core.spec import FieldError, InvalidSpec, TaskSpec, parse_task
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    PodOutcome,
    Result,
    expired_jobs,
    read_previous,
    reduce_status,
    same_status,
    says_stopped,
)
from taskmaster.core.times import parse_time, rfc3339
from taskmaster.shell.kube import ApiError
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.timebox import TIME_BOX_SECONDS, Overrun, time_box
from taskmaster.shell.workqueue import Op, WorkQueue

logger = logging.getLogger(__name__)

# Reconciles and records of different tasks in flight at once.
_CONCURRENCY = 64
# How long a decided status may wait behind runs falling due (seconds): it goes
# after what is due by then, before what is due later.
_RECORD_DELAY = 1.0
# Back-off after an API error on one task (seconds): doubles up to the cap.
_ERROR_BACKOFF = (1.0, 60.0)


_EVENT_OF_RESULT = {
    Result.SUCCEEDED: ("Normal", "RunSucceeded"),
    Result.FAILED: ("Warning", "RunFailed"),
    Result.TIMED_OUT: ("Warning", "RunTimedOut"),
    Result.MISSED: ("Warning", "RunMissed"),
    Result.SKIPPED: ("Normal", "RunSkipped"),
    Result.REPLACED: ("Normal", "RunReplaced"),
}


def _version(body: Mapping[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def _timestamp(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _spec_changed_at(managed_fields: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The latest time a manager wrote the spec, as the object's managedFields say.

    A manager's time is that of its latest write of any of its fields, so this
    is never before the spec's last change (it may be after it: then times
    between count as passed while suspended, never as run twice).
    """
    times = [
        parse_time(entry.get("time"))
        for entry in managed_fields
        if isinstance(entry, Mapping)
        and entry.get("subresource") != "status"
        and "f:spec" in (entry.get("fieldsV1") or {})
    ]
    return max((t for t in times if t is not None), default=None)


def _encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Unwritten:
    """A status decided and not yet written, and what to report once it is."""

    # Merge patch of the status: every field the operator owns.
    status: dict[str, Any] = field(default_factory=dict)
    # Events to post: (type, reason, message, action).
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    # The Jobs the status was decided from: judged for expiry once it is written.
    jobs: list[JobView] = field(default_factory=list)
    # Jobs replaced (concurrencyPolicy Replace): deleted once the status is written.
    replaced: list[str] = field(default_factory=list)
    # Jobs recorded in the status decided: not new again, whatever history it keeps.
    recorded: set[str] = field(default_factory=set)


@dataclass
class Task:
    """What the operator keeps of one ScheduledTask.

    The object itself is kept as JSON, without its managedFields (which nothing
    here reads and which are a large part of every object), and read when
    needed: with 10,000 tasks, the same objects as Python dicts took five times
    the memory, for fields read a few times per reconcile. What is read more
    often than that is kept beside it.
    """

    ref: TaskRef
    # The object without status and managedFields; its status.
    object: bytes = b"{}"
    object_status: bytes = b"{}"
    version: int = 0
    generation: int | None = None
    run_now_token: str | None = None
    resume_token: str | None = None
    backfill_request: str | None = None
    phase: str | None = None
    spec: TaskSpec | None = None
    invalid: InvalidSpec | None = None
    # The generation `spec`/`invalid` were parsed from.
    parsed: int | None = None
    # When the spec last changed, from managedFields (which are not kept).
    spec_changed_at: datetime | None = None
    failures: int = 0
    # After a decision overran its time box: (generation, until when) no decision is tried.
    held: tuple[int | None, float] | None = None
    unwritten: Unwritten | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Task:
        metadata = body["metadata"]
        task = cls(TaskRef(metadata["namespace"], metadata["name"], metadata["uid"]))
        task.keep(body)
        return task

    def keep(self, body: Mapping[str, Any]) -> None:
        """Hold this version of the object."""
        self.spec_changed_at = _spec_changed_at(body["metadata"].get("managedFields") or ())
        metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        status = body.get("status") or {}
        self.object = _encoded(
            {**{k: v for k, v in body.items() if k != "status"}, "metadata": metadata}
        )
        self.object_status = _encoded(status)
        self.version = _version(body)
        self.generation = metadata.get("generation")
        annotations = metadata.get("annotations") or {}
        self.run_now_token = annotations.get(ANNOTATION_RUN_NOW)
        self.resume_token = annotations.get(ANNOTATION_RESUME)
        self.backfill_request = annotations.get(ANNOTATION_BACKFILL)
        self.phase = status.get("phase")

    @property
    def body(self) -> dict[str, Any]:
        """The object as held (without managedFields)."""
        body: dict[str, Any] = json.loads(self.object)
        body["status"] = json.loads(self.object_status)
        return body

    @property
    def status(self) -> dict[str, Any]:
        """The status as decided: the object's, with what is not yet written over it."""
        status: dict[str, Any] = json.loads(self.object_status)
        if self.unwritten is None:
            return status
        merged = {**status, **self.unwritten.status}
        return {key: value for key, value in merged.items() if value is not None}

    @property
    def recorded_jobs(self) -> frozenset[str]:
        """The Jobs recorded in the status decided and not yet written."""
        return frozenset(self.unwritten.recorded) if self.unwritten else frozenset()

    @property
    def decided_phase(self) -> str | None:
        if self.unwritten is not None and "phase" in self.unwritten.status:
            phase: str | None = self.unwritten.status["phase"]
            return phase
        return self.phase

    def resume_at(self) -> float | None:
        """How urgent a first reconcile is: by the next run its status announces.

        After a start or a failover every task is reconciled; those whose runs
        fall due soonest go first, or a run due in a few seconds would wait
        behind thousands of tasks that have nothing to do for minutes.
        """
        status = json.loads(self.object_status)
        next_run = parse_time(status.get("nextRunTime"))
        if next_run is None or status.get("observedGeneration") != self.generation:
            return None  # now
        return next_run.timestamp()

    def parse(self, now: datetime) -> bool:
        """Parse the spec once per generation; True if that ran past its time box
        (the task is then Invalid until its spec changes). `now` stands in for a
        creation time the object lacks."""
        if self.parsed == self.generation and self.parsed is not None:
            return False
        self.parsed = self.generation
        try:
            with time_box(TIME_BOX_SECONDS):
                self.spec = parse_task(self.body, now=now)
            self.invalid = None
        except InvalidSpec as invalid:
            self.spec, self.invalid = None, invalid
        except Overrun:
            why = f"reading it took longer than {TIME_BOX_SECONDS:g}s; set aside until it changes"
            self.spec, self.invalid = None, InvalidSpec([FieldError("spec", why)])
            return True
        return False


class Fenced(Exception):
    """This replica may no longer act: the reconcile stops before writing anything more."""


# Where the scheduler reads the time: the wall clock, or a test's fixed instants.
Clock = Callable[[], datetime]


class Api(Protocol):
    """What the scheduler asks of the API server (`shell/kube.py`'s Kube; fakes in tests)."""

    async def create_job(self, job: Mapping[str, Any]) -> bool: ...

    async def delete_job(self, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def post_event(
        self, task: TaskRef, type_: str, reason: str, message: str, action: str
    ) -> None: ...


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self,
        kube: Api,
        metrics: Metrics,
        *,
        worker_image: str | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.metrics = metrics
        self.worker_image = worker_image
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, dict[str, JobView]] = {}
        # How the pods of each Job (namespace, name) ended: exit, message, disruption.
        self.pods: dict[tuple[str, str], PodOutcome] = {}
        self._job_versions: dict[tuple[str, str], int] = {}
        self.queue = WorkQueue(_CONCURRENCY)
        # Set whenever the queue may have work for the loop.
        self._changed = asyncio.Event()
        # Set whenever the last reconcile or record in flight ends.
        self.idle = asyncio.Event()
        # Set while this replica may act (leader, caches warm); `since` is when it began.
        self.acting = asyncio.Event()
        self.since = clock()
        self.last_loop = time.monotonic()
        # Asked before every Job is created: False once leadership may be lost.
        self.may_act: Callable[[], bool] = lambda: True
        metrics.count_phases(self.phases)

    def _now(self) -> float:
        return self.clock().timestamp()

    def stalled(self, limit: float) -> bool:
        """Whether the loop, while it should be acting, has not turned for `limit` seconds.

        A follower's loop rightly waits for leadership: that is no stall.
        """
        return self.acting.is_set() and time.monotonic() - self.last_loop > limit

    def phases(self) -> Counter[str]:
        return Counter(task.decided_phase or "Pending" for task in self.tasks.values())

    # -- what the watches report -------------------------------------------------

    def task_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = f"{metadata['namespace']}/{metadata['name']}"
        if event_type == "DELETED":
            self.tasks.pop(key, None)
            self.queue.wake(key, None)
            if not self.jobs.get(key):
                self.jobs.pop(key, None)
            self.metrics.forget(metadata["namespace"], metadata["name"])
            return
        task = self.tasks.get(key)
        if task is not None and task.ref.uid == metadata["uid"]:
            version, held = _version(body), task.version
            if version < held:
                return  # older than what the operator itself wrote
            if version == held and "resourceVersion" in metadata:
                # The very object already held: mostly the echo of the operator's
                # own status write, which would only redo the reconcile it came from.
                return
            task.keep(body)
            self.poke(key)
        else:
            task = self.tasks[key] = Task.of(body)
            self.poke(key, task.resume_at())

    def job_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        owner = next(
            (
                ref
                for ref in metadata.get("ownerReferences") or ()
                if ref.get("kind") == KIND and ref.get("controller")
            ),
            None,
        )
        if owner is None:
            return
        key = f"{metadata['namespace']}/{owner['name']}"
        jobs = self.jobs.setdefault(key, {})
        name = metadata["name"]
        if event_type == "DELETED":
            jobs.pop(name, None)
            self._job_versions.pop((key, name), None)
            self.pods.pop((metadata["namespace"], name), None)
            if not jobs and key not in self.tasks:
                del self.jobs[key]  # the task and all its Jobs are gone
        else:
            version = _version(body)
            if version < self._job_versions.get((key, name), 0):
                return
            view = JobView.from_job(body)
            if view is None:
                return
            self._job_versions[(key, name)] = version
            task = self.tasks.get(key)
            if task is not None and task.unwritten and name in task.unwritten.replaced:
                view = replace(view, deleting=True)  # replaced: deleted once recorded
            if jobs.get(name) == view:
                # Most of a Job's updates (pod counts, finalizers, the controller's
                # bookkeeping) change nothing a decision or the status reads.
                return
            jobs[name] = view
        self.poke(key)

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            return  # what it ended with stays known until its Job goes
        metadata = body["metadata"]
        labels = metadata.get("labels") or {}
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        outcome = PodOutcome.from_pod(body)
        if job and outcome is not None:
            self.pods[(metadata["namespace"], job)] = outcome

    def poke(self, key: str, at: float | None = None) -> None:
        """Queue a reconcile of the task, as urgent as something due at `at` (default: now)."""
        self._enqueue((key, False), self._now() if at is None else at)

    def resume(self) -> None:
        """Queue every task, most urgent first: this replica starts (or starts again) to act.

        Whatever an earlier term decided and did not write is dropped (a
        reconcile still in flight when it ended may have left some): the objects
        say what happened since. So is what was queued before: every task is
        queued again here, and the start-up listing of Jobs queued theirs as
        urgent as "now", which would put them all ahead of runs due in seconds.
        """
        self.forget_unwritten()
        self.queue.clear()
        for key, task in self.tasks.items():
            self.poke(key, task.resume_at())

    async def flush(self, seconds: float) -> None:
        """Stop reconciling and write what was decided, for at most `seconds`.

        For a graceful stop: the Jobs are there either way, but a status (and
        its Events) left unwritten is decided again by the next leader, a
        little later, and its Events are lost.
        """
        self.queue.draining = True
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.queue.running or any(task.unwritten for task in self.tasks.values()):
                    self.idle.clear()
                    await self.idle.wait()

    def forget_unwritten(self) -> None:
        """Drop what was decided and not written: this replica no longer acts, and the
        next leader decides afresh from the objects (what it reported included)."""
        for key, task in self.tasks.items():
            if task.unwritten is not None:
                # Replaced Jobs not deleted yet are still running: active again.
                held = self.jobs.get(key, {})
                for name in task.unwritten.replaced:
                    if name in held:
                        held[name] = replace(held[name], deleting=False)
            task.unwritten = None

    def _enqueue(self, op: Op, at: float, *, now: bool = True) -> None:
        if self.queue.add(op, at) and now:
            self._changed.set()

    def _wake(self, key: str, at: datetime | None) -> None:
        if self.queue.wake(key, None if at is None else at.timestamp()) and at is not None:
            self._changed.set()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Run queued reconciles and records, and wake tasks on time, until cancelled."""
        started: set[asyncio.Task[None]] = set()
        while True:
            await self.acting.wait()
            self.last_loop = time.monotonic()
            self.queue.wake_due(self._now())
            self._changed.clear()
            for op in self.queue.take():
                job = asyncio.create_task(self._guarded(op))
                started.add(job)
                job.add_done_callback(started.discard)
            next_wake = self.queue.next_wake()
            timeout = 5.0 if next_wake is None else max(0.0, next_wake - self._now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(timeout, 5.0))

    async def _guarded(self, op: Op) -> None:
        key, record = op
        fenced = False
        try:
            await (self.record(key) if record else self.reconcile(key))
        except ApiError as error:
            self._retry_later(key, error)
        except Fenced as refused:
            # Redone once leadership is certain again: when it is regained every
            # task is queued; when it was only late to renew, on a later loop turn
            # (not at once: that would spin while leadership stays uncertain).
            logger.warning("%s: %s", key, refused)
            self._enqueue(op, self._now(), now=False)
            fenced = True
        except Exception:
            logger.exception("%s %s failed", "recording" if record else "reconciling", key)
            self._retry_later(key, None)
        finally:
            self.queue.done(key)
            if not fenced:
                self._changed.set()
            if not self.queue.running:
                self.idle.set()

    def _retry_later(self, key: str, error: ApiError | None) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        self.metrics.reconcile_errors.labels("reconcile").inc()
        delay = self._back_off(task)
        logger.warning("reconciling %s failed (%s); retrying in %.0fs", key, error, delay)

    def _back_off(self, task: Task) -> float:
        """Decide for the task again after a delay that doubles with each failure in a row."""
        task.failures += 1
        first, cap = _ERROR_BACKOFF
        delay: float = min(first * 2.0 ** (task.failures - 1), cap)
        self._wake(task.ref.key, self.clock() + timedelta(seconds=delay))
        return delay

    # -- one task -----------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        if task.held is not None:
            generation, until = task.held
            if generation == task.generation and self._now() < until:
                return  # its back-off wakes it
            task.held = None
        if task.parse(self.clock()):
            self.metrics.overruns.labels("parse").inc()
            logger.warning("%s: parsing the spec ran past its time box; set aside", key)
        now = self.clock()
        jobs = self.jobs.setdefault(key, {})
        if task.spec is None:
            invalid = Observation(
                None, list(jobs.values()), now, task.generation, invalid=task.invalid
            )
            self._decide_status(task, invalid)
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
                    ),
                    now,
                )
        except Overrun:
            self._overran(task, jobs, now, cursor, status)
            return
        records = list(plan.records)
        for run in plan.create:
            records += await self._start(task, task.spec, run, jobs)
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
            jobs[job.name] = replace(current, deleting=True)
            replaced.append(job.name)
        ns = task.ref.namespace
        observed_jobs = [job.with_pod(self.pods.get((ns, job.name))) for job in jobs.values()]
        self._decide_status(
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
        )
        if replaced:
            self._unwritten(task).replaced += replaced
        if task.unwritten is None:
            await self._expire(task, observed_jobs, task.status)
        task.failures = 0
        self._observe(task, plan, jobs.values())
        self._wake(key, plan.wake_at)

    def _overran(
        self,
        task: Task,
        jobs: dict[str, JobView],
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
        self._decide_status(
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
        self._report(task, "Warning", "DecisionOverrun", why, "Decide")
        # Until the back-off is over, events about the task (its own writes,
        # a user's edits of its metadata) do not make it decide again.
        task.held = (task.generation, self._now() + self._back_off(task))

    async def _start(
        self, task: Task, spec: TaskSpec, run: Run, jobs: dict[str, JobView]
    ) -> list[HistoryEntry]:
        """Create the run's Job; a spec the API refuses is a failed run, not a retry loop."""
        name = job_name(task.ref.name, run)
        self._fence(f"creating Job {name}")
        try:
            manifest = render_job(task.ref, spec, run, worker_image=self.worker_image)
            created = await self.kube.create_job(manifest)
        except (ApiError, ValueError) as error:
            if isinstance(error, ApiError) and (error.status >= 500 or error.status == 429):
                raise
            message = f"Job {name} could not be created: {error}"
            self._report(task, "Warning", "JobCreateFailed", message, "CreateJob")
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
        if view is not None and name not in jobs:
            # As created; unless the watch was quicker and already told more.
            jobs[name] = view
        due = run.scheduled if run.token else due_at(task.ref.key, spec, run.scheduled)
        lag = (self.clock() - due).total_seconds()
        self.metrics.fire_lag.labels(run.trigger.value).observe(max(lag, 0.0))
        self.metrics.tasks.of(task.ref.namespace, task.ref.name).started[run.trigger.value] += 1
        self._report(
            task,
            "Normal",
            "JobCreated",
            f"created Job {name} for the {run.trigger.value} run at {rfc3339(run.scheduled)}",
            "CreateJob",
        )
        return []

    def _decide_status(self, task: Task, observed: Observation) -> None:
        """The next status, kept as unwritten (with its Events) until `record` writes it."""
        decided = task.status  # decoded once: the held status is JSON
        update = reduce_status(decided, replace(observed, recorded_jobs=task.recorded_jobs))
        if same_status(decided, update.status):
            return
        unwritten = self._unwritten(task)
        unwritten.status.update(update.status)
        unwritten.jobs = list(observed.jobs)
        unwritten.recorded |= {entry.job_name for entry in update.recorded if entry.job_name}
        if observed.invalid is not None:
            # Once per new message: the status does not change otherwise.
            self._report(task, "Warning", "InvalidSpec", str(observed.invalid), "Validate")
        for entry in update.recorded:
            # One Missed entry can stand for many scheduled times; count the times.
            series = self.metrics.tasks.of(task.ref.namespace, task.ref.name)
            series.finished[entry.result.value] += entry.runs
            type_, reason = _EVENT_OF_RESULT[entry.result]
            what = f"Job {entry.job_name}" if entry.job_name else "run"
            message = f"{what} ({rfc3339(entry.scheduled_time)}): {entry.result.value}"
            if entry.message or entry.reason:
                message += f": {entry.message or entry.reason}"
            self._report(task, type_, reason, message, "RecordRun")
        if says_stopped(update.status) and not says_stopped(decided):
            ready = next(c for c in update.status["conditions"] if c["type"] == "Ready")
            self._report(task, "Warning", "Stopped", ready["message"], "Stop")
        self._report_backfill(task, decided.get("backfill"), update.status.get("backfill"))

    def _report_backfill(self, task: Task, before: Any, after: Any) -> None:
        """An Event when a backfill starts, completes or is refused."""
        for event in backfill_events(Backfill.from_status(before), Backfill.from_status(after)):
            self._report(task, *event, "Backfill")

    def _report(self, task: Task, type_: str, reason: str, message: str, action: str) -> None:
        """An Event, posted by `record` once the status it goes with is written."""
        self._unwritten(task).events.append((type_, reason, message, action))

    def _unwritten(self, task: Task) -> Unwritten:
        if task.unwritten is None:
            task.unwritten = Unwritten()
            self._enqueue((task.ref.key, True), self._now() + _RECORD_DELAY)
        return task.unwritten

    async def record(self, key: str) -> None:
        """Write the status decided for the task, post its Events, delete expired Jobs."""
        task = self.tasks.get(key)
        if task is None or task.unwritten is None:
            return
        unwritten = task.unwritten
        if unwritten.status:
            self._fence("writing the status")
            try:
                body = await self.kube.patch_status(
                    task.ref.namespace, task.ref.name, unwritten.status
                )
            except ApiError as error:
                if error.status == 404:
                    self.task_event("DELETED", task.body)
                    return
                raise
            if _version(body) >= task.version:
                task.keep(body)
        # Replaced Jobs go now that their replacement is written; one that cannot be
        # deleted yet stays listed (and the status with it), for the next attempt.
        held = self.jobs.get(key, {})
        while unwritten.replaced:
            name = unwritten.replaced[0]
            self._fence(f"deleting Job {name}")
            await self.kube.delete_job(task.ref.namespace, name)
            held.pop(name, None)
            unwritten.replaced.pop(0)
        task.unwritten = None
        for event in unwritten.events:
            await self._event(task, *event)
        # Job events kept arriving while the status was decided and written: what
        # expires is judged on the Jobs the written history came from, or a Job
        # that finished meanwhile would be deleted before its run is recorded.
        await self._expire(task, unwritten.jobs, unwritten.status)

    async def _expire(self, task: Task, jobs: list[JobView], written: Mapping[str, Any]) -> None:
        """Delete the finished Jobs that the written history no longer needs."""
        if task.spec is None or "history" not in written:
            return
        held = self.jobs.get(task.ref.key, {})
        for name in expired_jobs(jobs, task.spec, written["history"]):
            self._fence(f"deleting Job {name}")
            await self.kube.delete_job(task.ref.namespace, name)
            held.pop(name, None)

    def _fence(self, what: str) -> None:
        """Refuse any write once leadership is no longer certain (lost, or frozen past it)."""
        if not self.may_act():
            raise Fenced(f"not {what}: leadership is not certain")

    async def _event(self, task: Task, type_: str, reason: str, message: str, action: str) -> None:
        if not self.may_act():
            return  # only a certain leader writes, Events included
        try:
            await self.kube.post_event(task.ref, type_, reason, message, action)
        except ApiError as error:
            # Events are best effort: never a reason to redo the work they report.
            self.metrics.reconcile_errors.labels("event").inc()
            logger.warning("posting event %s for %s failed: %s", reason, task.ref.key, error)

    def _observe(self, task: Task, plan: Plan, jobs: Iterable[JobView]) -> None:
        series = self.metrics.tasks.of(task.ref.namespace, task.ref.name)
        series.active = sum(1 for job in jobs if job.active)
        # No series rather than a stale time: "overdue" alerts compare it with now.
        series.next_schedule_time = _timestamp(plan.next_run_time)
        series.last_schedule_time = _timestamp(plan.last_schedule_time)
