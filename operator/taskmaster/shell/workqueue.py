"""The scheduler's work queue: what to do for which task, most urgent first.

Like client-go's work queue and delaying queue, in one small piece with no
clock of its own (callers pass the times):

- an op is a task's reconcile or its record (`Op`); queued once, with the
  urgency of its most urgent request (an earlier time is more urgent);
- a wake-up is a time at which a task's reconcile becomes due, one per task,
  the latest request replacing the earlier;
- `take` hands out the most urgent ops, as many as there are free slots and
  at most one per task: a task's next op waits for the one in flight;
- while draining (a graceful stop), only records are handed out.
"""

from __future__ import annotations

import heapq
import itertools

# A task's reconcile (False) or its record (True), by the task's key.
Op = tuple[str, bool]


class WorkQueue:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.draining = False
        # Keys of the tasks with an op in flight.
        self.running: set[str] = set()
        # Work to do now, most urgent first; `_urgency` holds the urgency of each
        # queued op, the heap may hold stale entries too.
        self._queue: list[tuple[float, int, Op]] = []
        self._urgency: dict[Op, float] = {}
        # Wake-ups in the future, by time (at, seq, key); `_wake_at` holds each task's
        # current one. Plain tuples: one per task, thousands of them.
        self._wakes: list[tuple[float, int, str]] = []
        self._wake_at: dict[str, float] = {}
        self._seq = itertools.count()

    def add(self, op: Op, at: float) -> bool:
        """Queue `op` as urgent as something due at `at`; whether that changed anything."""
        held = self._urgency.get(op)
        if held is not None and held <= at:
            return False
        self._urgency[op] = at
        heapq.heappush(self._queue, (at, next(self._seq), op))
        return True

    def wake(self, key: str, at: float | None) -> bool:
        """Reconcile the task at `at` (None: at no particular time); whether that changed."""
        if at is None:
            return self._wake_at.pop(key, None) is not None
        if self._wake_at.get(key) == at:
            return False
        self._wake_at[key] = at
        heapq.heappush(self._wakes, (at, next(self._seq), key))
        return True

    def next_wake(self) -> float | None:
        """When the earliest wake-up falls due (it may be a stale one: harmless)."""
        return self._wakes[0][0] if self._wakes else None

    def wake_due(self, now: float) -> None:
        """Queue the reconcile of every task whose wake-up is due, as urgent as its time."""
        while self._wakes and self._wakes[0][0] <= now:
            at, _, key = heapq.heappop(self._wakes)
            if self._wake_at.get(key) == at:
                del self._wake_at[key]
                self.add((key, False), at)

    def clear(self) -> None:
        """Forget every queued op (wake-ups stay)."""
        self._queue.clear()
        self._urgency.clear()

    def take(self) -> list[Op]:
        """The most urgent queued ops, as many as there are free slots, one per task;
        each counts as running until `done`.

        Only that many are handed out: the rest stay in urgency order, so that
        what falls due meanwhile can still go ahead of them.
        """
        ops: list[Op] = []
        busy: list[tuple[float, int, Op]] = []
        while self._queue and len(self.running) < self.concurrency:
            entry = heapq.heappop(self._queue)
            at, _, op = entry
            if self._urgency.get(op) != at:
                continue  # superseded by a more urgent entry, or done
            if self.draining and not op[1]:
                del self._urgency[op]
                continue  # stopping: only what was decided is still written
            if op[0] in self.running:
                busy.append(entry)  # after the one in flight for that task
                continue
            del self._urgency[op]
            ops.append(op)
            self.running.add(op[0])
        for entry in busy:
            heapq.heappush(self._queue, entry)
        return ops

    def done(self, key: str) -> None:
        self.running.discard(key)
