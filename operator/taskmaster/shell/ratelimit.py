"""The client's rate limit: a token bucket, as client-go's `--kube-api-qps` and
`--kube-api-burst` (golang.org/x/time/rate's reservations, without a clock of its own).

Up to `burst` requests go at once; after that, one per 1/`qps` seconds. A
request that finds the bucket empty reserves the next token and waits for it,
so waiting requests go in the order they came, and a burst of thousands is
spread out rather than refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`qps` 0 means no limit."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps < 0 or burst < 1:
            raise ValueError("need qps >= 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        # Tokens in the bucket at `_at`; below zero, the debt of requests already waiting.
        self._tokens = float(burst)
        self._at = clock()

    def reserve(self) -> float:
        """Take a token; how long to wait until it is there (0: go now)."""
        if self.qps == 0:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> float:
        """Wait for a token; the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay
