"""The scheduler: one in-memory timer queue for every task, and the reconcile that acts.

Watch events (from kopf) keep `Scheduler.tasks` and `Scheduler.jobs` current
and mark a task dirty; one loop pops due wake-ups from a heap and reconciles
dirty tasks, each at most once at a time. A reconcile reads only memory, asks
the pure core what to do (`decide`, `render_job`, `reduce_status`) and carries
it out. What it writes (Jobs, status) goes back into memory at once, so the
next decision never works from an older state than the operator's own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmaster.core.admission import parse_task
from taskmaster.core.decide import Plan, TaskState, decide, due_at
from taskmaster.core.names import ANNOTATION_RUN_NOW, KIND, Run, TaskRef, job_name
from taskmaster.core.render import render_job, rfc3339
from taskmaster.core.spec import InvalidSpec, TaskSpec
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    PodOutcome,
    Result,
    expired_jobs,
    parse_time,
    read_history,
    reduce_status,
    same_status,
)
from taskmaster.shell.kube import ApiError, Kube
from taskmaster.shell.metrics import Metrics

logger = logging.getLogger(__name__)

# Reconciles of different tasks in flight at once.
_CONCURRENCY = 64
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


def _kept(body: Mapping[str, Any]) -> dict[str, Any]:
    """A task's body as kept in memory: without managedFields, which nothing here reads
    and which are a large part of every object (each manager's fields, spec and status)."""
    metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return {**body, "metadata": metadata}


@dataclass
class Task:
    """What the operator keeps of one ScheduledTask."""

    ref: TaskRef
    body: dict[str, Any]
    spec: TaskSpec | None = None
    invalid: InvalidSpec | None = None
    # The generation `spec`/`invalid` were parsed from.
    parsed: int | None = None
    failures: int = 0

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.body.get("status") or {}
        return status

    @property
    def generation(self) -> int | None:
        generation: int | None = self.body["metadata"].get("generation")
        return generation

    def parse(self) -> None:
        if self.parsed == self.generation and self.parsed is not None:
            return
        try:
            self.spec = parse_task(self.body, now=datetime.now(UTC))
            self.invalid = None
        except InvalidSpec as invalid:
            self.spec, self.invalid = None, invalid
        self.parsed = self.generation


@dataclass(order=True)
class _Wake:
    at: float
    seq: int
    key: str = field(compare=False)


class Fenced(Exception):
    """This replica may no longer act: the reconcile stops before writing anything more."""


class Scheduler:
    def __init__(self, kube: Kube, metrics: Metrics, *, worker_image: str | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.worker_image = worker_image
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, dict[str, JobView]] = {}
        # How the pods of each Job (namespace, name) ended: exit, message, disruption.
        self.pods: dict[tuple[str, str], PodOutcome] = {}
        self._job_versions: dict[tuple[str, str], int] = {}
        self._heap: list[_Wake] = []
        self._wake_at: dict[str, float] = {}
        self._seq = itertools.count()
        self._dirty: set[str] = set()
        self._running: set[str] = set()
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        # Set while this replica may act (leader, caches warm); `since` is when it began.
        self.acting = asyncio.Event()
        self.since = datetime.now(UTC)
        self.last_loop = time.monotonic()
        # Asked before every Job is created: False once leadership may be lost.
        self.may_act: Callable[[], bool] = lambda: True
        metrics.count_phases(self.phases)

    async def wait_warm(self, namespaces: Sequence[str]) -> None:
        """Load every task and Job there is, so that no decision is taken on a partial view.

        The watches deliver the same objects again; their resourceVersions keep
        the newer copy.
        """
        for job in await self.kube.list_jobs(namespaces):
            self.job_event(None, job)
        for task in await self.kube.list_tasks(namespaces):
            self.task_event(None, task)

    def stalled(self, limit: float) -> bool:
        """Whether the loop, while it should be acting, has not turned for `limit` seconds.

        A follower's loop rightly waits for leadership: that is no stall.
        """
        return self.acting.is_set() and time.monotonic() - self.last_loop > limit

    def phases(self) -> Counter[str]:
        return Counter(task.status.get("phase") or "Pending" for task in self.tasks.values())

    # -- what the watches report -------------------------------------------------

    def task_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = f"{metadata['namespace']}/{metadata['name']}"
        if event_type == "DELETED":
            self.tasks.pop(key, None)
            self._wake_at.pop(key, None)
            if not self.jobs.get(key):
                self.jobs.pop(key, None)
            self.metrics.forget(metadata["namespace"], metadata["name"])
            return
        task = self.tasks.get(key)
        if task is not None and task.ref.uid == metadata["uid"]:
            version, held = _version(body), _version(task.body)
            if version < held:
                return  # older than what the operator itself wrote
            if version == held and "resourceVersion" in metadata:
                # The very object already held: mostly the echo of the operator's
                # own status write, which would only redo the reconcile it came from.
                return
            task.body = _kept(body)
        else:
            ref = TaskRef(metadata["namespace"], metadata["name"], metadata["uid"])
            self.tasks[key] = Task(ref=ref, body=_kept(body))
        self.poke(key)

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

    def poke(self, key: str) -> None:
        self._dirty.add(key)
        self._changed.set()

    def _wake(self, key: str, at: datetime | None) -> None:
        if at is None:
            self._wake_at.pop(key, None)
            return
        timestamp = at.timestamp()
        if self._wake_at.get(key) == timestamp:
            return
        self._wake_at[key] = timestamp
        heapq.heappush(self._heap, _Wake(timestamp, next(self._seq), key))
        self._changed.set()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile dirty tasks and wake tasks on time, until cancelled."""
        reconciles: set[asyncio.Task[None]] = set()
        while True:
            await self.acting.wait()
            self.last_loop = time.monotonic()
            now = time.time()
            while self._heap and self._heap[0].at <= now:
                wake = heapq.heappop(self._heap)
                if self._wake_at.get(wake.key) == wake.at:
                    del self._wake_at[wake.key]
                    self._dirty.add(wake.key)
            for key in list(self._dirty - self._running):
                self._dirty.discard(key)
                self._running.add(key)
                reconcile = asyncio.create_task(self._guarded(key))
                reconciles.add(reconcile)
                reconcile.add_done_callback(reconciles.discard)
            self._changed.clear()
            timeout = max(0.0, self._heap[0].at - time.time()) if self._heap else 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(timeout, 5.0))

    async def _guarded(self, key: str) -> None:
        try:
            async with self._slots:
                await self.reconcile(key)
        except ApiError as error:
            self._retry_later(key, error)
        except Fenced as fenced:
            # Redone once leadership is certain again: when it is regained every
            # task is poked; when it was only late to renew, the next loop turn.
            logger.warning("%s: %s", key, fenced)
            self._running.discard(key)
            self._dirty.add(key)
            return
        except Exception:
            logger.exception("reconciling %s failed", key)
            self._retry_later(key, None)
        self._running.discard(key)
        if key in self._dirty:
            self._changed.set()

    def _retry_later(self, key: str, error: ApiError | None) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        task.failures += 1
        self.metrics.reconcile_errors.labels("reconcile").inc()
        first, cap = _ERROR_BACKOFF
        delay = min(first * 2 ** (task.failures - 1), cap)
        logger.warning("reconciling %s failed (%s); retrying in %.0fs", key, error, delay)
        self._wake(key, datetime.now(UTC) + timedelta(seconds=delay))

    # -- one task -----------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        task = self.tasks.get(key)
        if task is None:
            return
        task.parse()
        now = datetime.now(UTC)
        jobs = self.jobs.setdefault(key, {})
        if task.spec is None:
            invalid = Observation(
                None, list(jobs.values()), now, task.generation, invalid=task.invalid
            )
            await self._write_status(task, invalid)
            return
        status = task.status
        plan = decide(
            TaskState(
                task=task.ref,
                spec=task.spec,
                jobs=list(jobs.values()),
                last_schedule_time=parse_time(status.get("lastScheduleTime")),
                since=self.since,
                run_now_token=(task.body["metadata"].get("annotations") or {}).get(
                    ANNOTATION_RUN_NOW
                ),
                handled_run_now_token=status.get("runNowToken"),
                history=read_history(status),
                was_suspended=any(
                    c.get("type") == "Suspended" and c.get("status") == "True"
                    for c in status.get("conditions") or ()
                ),
            ),
            now,
        )
        records = list(plan.records)
        for job in plan.delete:
            self._fence(f"deleting Job {job.name}")
            await self.kube.delete_job(task.ref.namespace, job.name)
            jobs.pop(job.name, None)
        for run in plan.create:
            records += await self._start(task, task.spec, run, jobs)
        ns = task.ref.namespace
        # Job events keep arriving while the status is written: what expires is
        # judged on the Jobs the written history was computed from, or a Job that
        # finished meanwhile would be deleted before its run is recorded.
        observed_jobs = [job.with_pod(self.pods.get((ns, job.name))) for job in jobs.values()]
        update = await self._write_status(
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
            ),
        )
        for name in expired_jobs(observed_jobs, task.spec, update.get("history") or ()):
            self._fence(f"deleting Job {name}")
            await self.kube.delete_job(task.ref.namespace, name)
            jobs.pop(name, None)
        task.failures = 0
        self._observe(task, plan, jobs.values())
        self._wake(key, plan.wake_at)

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
            await self._event(task, "Warning", "JobCreateFailed", message, "CreateJob")
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
        if created is None:
            return []  # it exists: this run already started (exactly once)
        view = JobView.from_job(created)
        if view is not None:
            jobs[name] = view
            self._job_versions[(task.ref.key, name)] = _version(created)
        due = run.scheduled if run.token else due_at(task.ref.key, spec, run.scheduled)
        lag = (datetime.now(UTC) - due).total_seconds()
        self.metrics.fire_lag.labels(run.trigger.value).observe(max(lag, 0.0))
        self.metrics.runs_started.labels(task.ref.namespace, task.ref.name, run.trigger.value).inc()
        await self._event(
            task,
            "Normal",
            "JobCreated",
            f"created Job {name} for the {run.trigger.value} run at {rfc3339(run.scheduled)}",
            "CreateJob",
        )
        return []

    async def _write_status(self, task: Task, observed: Observation) -> dict[str, Any]:
        update = reduce_status(task.status, observed)
        if not same_status(task.status, update.status):
            self._fence("writing the status")
            if observed.invalid is not None:
                # Once per new message: the status does not change otherwise.
                await self._event(task, "Warning", "InvalidSpec", str(observed.invalid), "Validate")
            try:
                body = await self.kube.patch_status(
                    task.ref.namespace, task.ref.name, update.status
                )
            except ApiError as error:
                if error.status == 404:
                    self.task_event("DELETED", task.body)
                    return update.status
                raise
            if _version(body) >= _version(task.body):
                task.body = _kept(body)
        for entry in update.recorded:
            # One Missed entry can stand for many scheduled times; count the times.
            self.metrics.runs_finished.labels(
                task.ref.namespace, task.ref.name, entry.result.value
            ).inc(entry.runs)
            type_, reason = _EVENT_OF_RESULT[entry.result]
            what = f"Job {entry.job_name}" if entry.job_name else "run"
            message = f"{what} ({rfc3339(entry.scheduled_time)}): {entry.result.value}"
            if entry.message or entry.reason:
                message += f": {entry.message or entry.reason}"
            await self._event(task, type_, reason, message, "RecordRun")
        return update.status

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
        labels = (task.ref.namespace, task.ref.name)
        self.metrics.active_runs.labels(*labels).set(sum(1 for job in jobs if job.active))
        if plan.next_run_time is not None:
            self.metrics.next_schedule_time.labels(*labels).set(plan.next_run_time.timestamp())
        else:
            # No series rather than a stale time: "overdue" alerts compare it with now.
            with contextlib.suppress(KeyError):
                self.metrics.next_schedule_time.remove(*labels)
        if plan.last_schedule_time is not None:
            self.metrics.last_schedule_time.labels(*labels).set(plan.last_schedule_time.timestamp())
