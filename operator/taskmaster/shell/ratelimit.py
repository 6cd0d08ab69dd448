"""The client's rate limit: a token bucket, as client-go's `--kube-api-qps` and
`--kube-api-burst`, with two priorities.

Up to `burst` requests go at once; after that, one per 1/`qps` seconds. A
request that finds the bucket empty waits for a token; waiting requests get
tokens in the order they came, urgent ones (the runs' Jobs) before the rest
(status writes, Events): a flood of bookkeeping under overload must not hold
back the Job that a freed slot is waiting for, as the scheduler's record step
already goes after the runs that are due.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

URGENT, NORMAL = 0, 1


class TokenBucket:
    """`qps` 0 means no limit."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps < 0 or burst < 1:
            raise ValueError("need qps >= 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        # Waiting requests: (priority, arrival, future).
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._granting: asyncio.Task[None] | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now

    def try_take(self) -> bool:
        """Take a token if one is there and nobody waits for it."""
        if self.qps == 0:
            return True
        self._refill()
        if self._waiting or self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def share(self, fraction: float) -> TokenBucket:
        """A bucket of its own with `fraction` of this one's rate and burst."""
        return TokenBucket(self.qps * fraction, max(1, round(self.burst * fraction)), self._clock)

    async def wait(self, priority: int = NORMAL) -> float:
        """Wait for a token; the seconds waited."""
        if self.try_take():
            return 0.0
        started = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._seq), future))
        if self._granting is None or self._granting.done():
            self._granting = asyncio.create_task(self._grant())
        await future
        return self._clock() - started

    async def _grant(self) -> None:
        """Hand out tokens as they come, most urgent (then oldest) waiter first."""
        while self._waiting:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                continue
            _, _, future = heapq.heappop(self._waiting)
            if future.cancelled():
                continue  # its request was abandoned
            self._tokens -= 1
            future.set_result(None)
