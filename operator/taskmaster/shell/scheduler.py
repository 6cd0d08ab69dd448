"""The scheduler: one in-memory timer queue for every task, and the loop that runs it.

It wires client-go's pieces, each a module of its own: the watches
(`shell/watch.py`) fill the cache (`shell/cache.py`), which asks for a
reconcile of each task that changed; the work queue (`shell/workqueue.py`)
holds those and the wake-ups; this loop turns due wake-ups into reconciles and
runs what is queued, most urgent first, each task at most once at a time. A
reconcile (`shell/reconcile.py`) decides and acts; the status it decided is
written later by the record step (`shell/record.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import datetime, timedelta

from taskmaster.core.times import Clock, wall_clock
from taskmaster.shell.api import Api, Fence, Fenced
from taskmaster.shell.cache import Cache
from taskmaster.shell.kube import ApiError
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.ratelimit import TokenBucket
from taskmaster.shell.reconcile import Reconciler
from taskmaster.shell.record import Recorder
from taskmaster.shell.slots import RunSlots
from taskmaster.shell.workqueue import Op, WorkQueue

logger = logging.getLogger(__name__)

# Reconciles and records of different tasks in flight at once.
_CONCURRENCY = 64
# How long a decided status may wait behind runs falling due (seconds): it goes
# after what is due by then, before what is due later.
_RECORD_DELAY = 1.0


class Scheduler:
    def __init__(
        self,
        kube: Api,
        metrics: Metrics,
        *,
        worker_image: str | None = None,
        max_active_runs: int | None = None,
        limiter: TokenBucket | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        """`limiter`: the client's rate limit, of which the record step's budgets are
        shares (`shell/record.py`)."""
        self.clock = clock
        self.metrics = metrics
        self.fence = Fence()
        self.queue = WorkQueue(_CONCURRENCY)
        self.cache = Cache(changed=self.poke, gone=self._gone)
        self.slots = RunSlots(max_active_runs, lambda: self.cache.active_runs)
        self.recorder = Recorder(
            kube,
            metrics,
            self.cache,
            self.fence,
            queue=self._queue_record,
            limiter=limiter,
            binding=lambda: self.slots.waiting > 0,
        )
        self.reconciler = Reconciler(
            kube,
            metrics,
            self.cache,
            self.recorder,
            self.slots,
            fence=self.fence,
            clock=clock,
            wake=self._wake,
            worker_image=worker_image,
        )
        # Set whenever the queue may have work for the loop.
        self._changed = asyncio.Event()
        # Set whenever the last reconcile or record in flight ends.
        self.idle = asyncio.Event()
        # Set while this replica may act (leader, caches warm).
        self.acting = asyncio.Event()
        self.last_loop = time.monotonic()
        metrics.count_phases(self.phases)
        metrics.count_slots(self.slots)

    def _now(self) -> float:
        return self.clock().timestamp()

    def stalled(self, limit: float) -> bool:
        """Whether the loop, while it should be acting, has not turned for `limit` seconds.

        A follower's loop rightly waits for leadership: that is no stall.
        """
        return self.acting.is_set() and time.monotonic() - self.last_loop > limit

    def phases(self) -> Counter[str]:
        return Counter(task.decided_phase or "Pending" for task in self.cache.tasks.values())

    def start_acting(self) -> None:
        """Queue every task, most urgent first: this replica starts (or starts again) to act.

        Whatever an earlier term decided and did not write is dropped (a
        reconcile still in flight when it ended may have left some): the objects
        say what happened since. So is what was queued before: every task is
        queued again here, and the start-up listing of Jobs queued theirs as
        urgent as "now", which would put them all ahead of runs due in seconds.
        """
        self.reconciler.since = self.clock()
        self.recorder.forget()
        self._forget_waiting()
        self.queue.clear()
        for key, task in self.cache.tasks.items():
            self.poke(key, task.resume_at())
        self.acting.set()

    def stop_acting(self) -> None:
        self.acting.clear()
        self.recorder.forget()
        self._forget_waiting()

    def _forget_waiting(self) -> None:
        """Who waits for a slot is the acting term's: the next one's decisions say anew."""
        self.slots.clear()
        for task in self.cache.tasks.values():
            task.waiting_from = None

    def poke(self, key: str, at: float | None = None) -> None:
        """Queue a reconcile of the task, as urgent as something due at `at` (default: now)."""
        self._enqueue((key, False), self._now() if at is None else at)

    async def flush(self, seconds: float) -> None:
        """Stop reconciling and write what was decided, for at most `seconds`.

        For a graceful stop: the Jobs are there either way, but a status (and
        its Events) left unwritten is decided again by the next leader, a
        little later, and its Events are lost.
        """
        self.queue.draining = True
        self._changed.set()
        tasks = self.cache.tasks

        def pending() -> bool:
            # Records of shed runs keep to their budget: the next leader records them anew.
            return any(t.unwritten and not t.unwritten.deferred for t in tasks.values())

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.queue.running or pending():
                    self.idle.clear()
                    await self.idle.wait()

    def _gone(self, namespace: str, name: str) -> None:
        self.queue.wake(f"{namespace}/{name}", None)
        self.slots.forget(f"{namespace}/{name}")
        self.metrics.forget(namespace, name)

    def _queue_record(self, key: str) -> None:
        self._enqueue((key, True), self._now() + _RECORD_DELAY)

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
            for key, waiting_from in self.slots.wake():
                self.poke(key, waiting_from)  # as urgent as its oldest held run
            self.recorder.release()
            self._changed.clear()
            for op in self.queue.take():
                job = asyncio.create_task(self._guarded(op))
                started.add(job)
                job.add_done_callback(started.discard)
            next_wake = self.queue.next_wake()
            timeout = 5.0 if next_wake is None else max(0.0, next_wake - self._now())
            if self.recorder.deferred:
                timeout = min(timeout, _RECORD_DELAY)  # their budget refills meanwhile
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(timeout, 5.0))

    async def _guarded(self, op: Op) -> None:
        key, record = op
        fenced = False
        try:
            if record:
                await self.recorder.record(key)
            else:
                await self.reconciler.reconcile(key)
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
        """Decide for the task again after a delay that doubles with each failure in a row."""
        task = self.cache.tasks.get(key)
        if task is None:
            return
        self.metrics.reconcile_errors.labels("reconcile").inc()
        delay = task.back_off()
        self._wake(key, self.clock() + timedelta(seconds=delay))
        logger.warning("reconciling %s failed (%s); retrying in %.0fs", key, error, delay)
