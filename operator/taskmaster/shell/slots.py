"""The operator's cap on runs in flight (`--max-active-runs`): free slots, and the
tasks waiting for one, oldest held run first.

Runs in flight are the active Jobs the cache holds plus those being created
(reserved when a decision starts them, released once the request is answered),
so that the reconciles in flight at once never start more than the cap
between them. A task whose decision held runs waits here; a slot freed wakes
the task waiting longest (by its oldest held run), each once until it decides
again.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class RunSlots:
    """`cap` None: no cap (nothing ever waits). `active()` counts the active Jobs."""

    def __init__(self, cap: int | None, active: Callable[[], int]) -> None:
        self.cap = cap
        self._active = active
        self.reserved = 0
        # Waiting tasks: the time of each one's oldest held run; the heap may hold
        # stale entries too.
        self._waiting: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        # Tasks woken for a slot that have not decided since.
        self._offered: set[str] = set()
        self._seq = itertools.count()

    @property
    def in_flight(self) -> int:
        return self._active() + self.reserved

    def free(self) -> int | None:
        """Runs a decision may start now; None without a cap."""
        if self.cap is None:
            return None
        return max(0, self.cap - self.in_flight)

    @property
    def waiting(self) -> int:
        """Tasks with runs waiting for a slot."""
        return len(self._waiting) + len(self._offered)

    def decided(self, key: str, waiting_from: float | None) -> None:
        """The task decided: it waits (from the time of its oldest held run) or not."""
        self._offered.discard(key)
        if waiting_from is None:
            self._waiting.pop(key, None)
            return
        if self._waiting.get(key) != waiting_from:
            self._waiting[key] = waiting_from
            heapq.heappush(self._heap, (waiting_from, next(self._seq), key))

    def forget(self, key: str) -> None:
        """The task is gone."""
        self._waiting.pop(key, None)
        self._offered.discard(key)

    def clear(self) -> None:
        """This replica stopped acting: the next term's decisions say who waits."""
        self._waiting.clear()
        self._heap.clear()
        self._offered.clear()

    def wake(self) -> list[tuple[str, float]]:
        """The tasks to wake for the free slots, oldest first, with the time each waits from.

        Each free slot not yet offered goes to one waiting task, which is offered
        it once: it is woken again only after it decided and still waits.
        """
        free = self.free()
        if free is None:
            return []
        woken: list[tuple[str, float]] = []
        while self._heap and len(self._offered) < free:
            at, _, key = heapq.heappop(self._heap)
            if self._waiting.get(key) != at:
                continue  # stale
            del self._waiting[key]
            self._offered.add(key)
            woken.append((key, at))
        return woken
