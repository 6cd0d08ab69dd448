"""The record step: a status decided in memory, written later with its Events.

A reconcile creates and deletes Jobs itself, but leaves the status it decided
(and the Events reporting it) to this step, queued after the runs that are
due: when thousands of runs fall due in the same second, their Jobs are
created first and the bookkeeping follows, instead of every Job waiting on the
writes of those before it. Jobs are deleted as expired only once the history
that replaces them is written.

Under overload the bookkeeping must not add to it. Events are best effort
within a budget of their own (as the kubelet's `--event-qps` beside its
`--kube-api-qps`): what goes over is dropped and counted. A status whose only
news is runs that waited too long for a slot (`--max-active-runs`) waits in
line and is written within a budget of its own, the task's later misses
merged into the same write. Both budgets are shares of the client's rate
limit, and far smaller ones while the cap binds: shedding load is when the
cluster is busiest, and the runs it can still start must get the API server.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from taskmaster.core.backfill import Backfill, backfill_events
from taskmaster.core.decide import WAITED_FOR_SLOT
from taskmaster.core.status import (
    HistoryEntry,
    JobView,
    Observation,
    Result,
    expired_jobs,
    reduce_status,
    same_status,
    says_stopped,
)
from taskmaster.core.times import rfc3339
from taskmaster.shell.api import Api, Fence
from taskmaster.shell.cache import Cache, Task, Unwritten, version_of
from taskmaster.shell.kube import ApiError
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

_EVENT_OF_RESULT = {
    Result.SUCCEEDED: ("Normal", "RunSucceeded"),
    Result.FAILED: ("Warning", "RunFailed"),
    Result.TIMED_OUT: ("Warning", "RunTimedOut"),
    Result.MISSED: ("Warning", "RunMissed"),
    Result.SKIPPED: ("Normal", "RunSkipped"),
    Result.REPLACED: ("Normal", "RunReplaced"),
}

# Shares of the client's rate limit (--kube-api-qps, --kube-api-burst) for Events
# and for the records of shed runs: while no run waits for a slot, and while some do.
EVENT_SHARE, EVENT_SHARE_BINDING = 0.2, 0.02
SHED_SHARE, SHED_SHARE_BINDING = 0.1, 0.01


def only_shed(recorded: Iterable[HistoryEntry]) -> bool:
    """Whether the runs recorded are all ones that waited too long for a slot."""
    entries = list(recorded)
    return bool(entries) and all(entry.reason == WAITED_FOR_SLOT for entry in entries)


class Recorder:
    """Keeps what each task's reconcile decided (`Task.unwritten`) until `record`
    writes it; `queue(key)` asks for that record step.

    `limiter`: the client's rate limit, of which Events and shed runs' records get
    their shares (none: no limit); `binding`: whether runs wait for a slot.
    """

    def __init__(
        self,
        kube: Api,
        metrics: Metrics,
        cache: Cache,
        fence: Fence,
        *,
        queue: Callable[[str], None],
        limiter: TokenBucket | None = None,
        binding: Callable[[], bool] = lambda: False,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.cache = cache
        self.fence = fence
        self.queue = queue
        self.binding = binding
        limiter = limiter or TokenBucket(0, 1)
        self._events = (limiter.share(EVENT_SHARE), limiter.share(EVENT_SHARE_BINDING))
        self._shed = (limiter.share(SHED_SHARE), limiter.share(SHED_SHARE_BINDING))
        # Tasks whose unwritten status only records shed runs, in the order they came.
        self.deferred: deque[str] = deque()

    def decide_status(self, task: Task, observed: Observation, *, acted: bool = True) -> None:
        """The next status, kept as unwritten (with its Events) until `record` writes it.

        `acted`: the decision created or deleted Jobs; if not, and the status only
        records runs shed for want of a slot, it is written later, within its budget.
        """
        decided = task.status  # decoded once: the held status is JSON
        update = reduce_status(decided, replace(observed, recorded_jobs=task.recorded_jobs))
        if same_status(decided, update.status):
            return
        shed = not acted and only_shed(update.recorded)
        if shed and task.unwritten is None:
            task.unwritten = Unwritten(deferred=True)
            self.deferred.append(task.ref.key)
        unwritten = self.unwritten(task)
        if unwritten.deferred and not shed:
            unwritten.deferred = False
            self.queue(task.ref.key)  # news of its own: written now, with what waited
        unwritten.update(update.status)
        unwritten.jobs = list(observed.jobs)
        unwritten.recorded |= {entry.job_name for entry in update.recorded if entry.job_name}
        if observed.invalid is not None:
            # Once per new message: the status does not change otherwise.
            self.report(task, "Warning", "InvalidSpec", str(observed.invalid), "Validate")
        for entry in update.recorded:
            # One Missed entry can stand for many scheduled times; count the times.
            series = self.metrics.tasks.of(task.ref.namespace, task.ref.name)
            series.count_finished(entry.result.value, entry.runs)
            type_, reason = _EVENT_OF_RESULT[entry.result]
            what = f"Job {entry.job_name}" if entry.job_name else "run"
            message = f"{what} ({rfc3339(entry.scheduled_time)}): {entry.result.value}"
            if entry.message or entry.reason:
                message += f": {entry.message or entry.reason}"
            self.report(task, type_, reason, message, "RecordRun")
        if says_stopped(update.status) and not says_stopped(decided):
            ready = next(c for c in update.status["conditions"] if c["type"] == "Ready")
            self.report(task, "Warning", "Stopped", ready["message"], "Stop")
        for event in backfill_events(
            Backfill.from_status(decided.get("backfill")),
            Backfill.from_status(update.status.get("backfill")),
        ):
            self.report(task, *event, "Backfill")

    def report(self, task: Task, type_: str, reason: str, message: str, action: str) -> None:
        """An Event, posted once the status it goes with is written."""
        self.unwritten(task).events.append((type_, reason, message, action))

    def unwritten(self, task: Task) -> Unwritten:
        if task.unwritten is None:
            task.unwritten = Unwritten()
            self.queue(task.ref.key)
        return task.unwritten

    def release(self) -> list[str]:
        """Queue the deferred records whose turn has come, as many as their budget
        allows; their keys."""
        budget = self._shed[self.binding()]
        released: list[str] = []
        while self.deferred:
            task = self.cache.tasks.get(self.deferred[0])
            if task is None or task.unwritten is None or not task.unwritten.deferred:
                self.deferred.popleft()  # gone, or written already with other news
                continue
            if not budget.try_take():
                break
            task.unwritten.deferred = False
            released.append(self.deferred.popleft())
            self.queue(released[-1])
        return released

    async def record(self, key: str) -> None:
        """Write the status decided for the task, post its Events, delete expired Jobs."""
        task = self.cache.tasks.get(key)
        if task is None or task.unwritten is None:
            return
        unwritten = task.unwritten
        written = unwritten.status
        if written:
            self.fence.check("writing the status")
            try:
                body = await self.kube.patch_status(task.ref.namespace, task.ref.name, written)
            except ApiError as error:
                if error.status == 404:
                    gone = {"namespace": task.ref.namespace, "name": task.ref.name}
                    self.cache.task_event("DELETED", {"metadata": gone})
                    return
                raise
            if version_of(body) >= task.version:
                task.keep(body)
        # Replaced Jobs go now that their replacement is written; one that cannot be
        # deleted yet stays listed (and the status with it), for the next attempt.
        while unwritten.replaced:
            name = unwritten.replaced[0]
            self.fence.check(f"deleting Job {name}")
            await self.kube.delete_job(task.ref.namespace, name)
            self.cache.drop_job(key, name)
            unwritten.replaced.pop(0)
        task.unwritten = None
        for name in unwritten.recorded:
            # Its run is in the written history: how its pod ended is not needed again.
            self.cache.pods.pop((task.ref.namespace, name), None)
        for event in unwritten.events:
            await self._event(task, *event)
        # Job events kept arriving while the status was decided and written: what
        # expires is judged on the Jobs the written history came from, or a Job
        # that finished meanwhile would be deleted before its run is recorded.
        await self.expire(task, unwritten.jobs, written)

    async def expire(self, task: Task, jobs: list[JobView], written: Mapping[str, Any]) -> None:
        """Delete the finished Jobs that the written history no longer needs."""
        if task.spec is None or "history" not in written:
            return
        for name in expired_jobs(jobs, task.spec, written["history"]):
            self.fence.check(f"deleting Job {name}")
            await self.kube.delete_job(task.ref.namespace, name)
            self.cache.drop_job(task.ref.key, name)

    async def _event(self, task: Task, type_: str, reason: str, message: str, action: str) -> None:
        if not self.fence.may_act():
            return  # only a certain leader writes, Events included
        if not self._events[self.binding()].try_take():
            self.metrics.events_dropped.labels(reason).inc()
            return
        try:
            await self.kube.post_event(task.ref, type_, reason, message, action)
        except ApiError as error:
            # Events are best effort: never a reason to redo the work they report.
            self.metrics.reconcile_errors.labels("event").inc()
            logger.warning("posting event %s for %s failed: %s", reason, task.ref.key, error)

    def forget(self) -> None:
        """Drop what was decided and not written: this replica no longer acts, and the
        next leader decides afresh from the objects (what it reported included)."""
        for key, task in self.cache.tasks.items():
            if task.unwritten is not None:
                # Replaced Jobs not deleted yet are still running: active again.
                held = self.cache.jobs_of(key)
                for name in task.unwritten.replaced:
                    if name in held:
                        self.cache.put_job(key, name, replace(held[name], deleting=False))
            task.unwritten = None
        self.deferred.clear()
