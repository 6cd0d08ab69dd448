"""The scheduler's own liveness: a follower waiting for leadership is not stalled."""

from __future__ import annotations

import time
from typing import Any, cast

from taskmaster.shell.metrics import Metrics
from taskmaster.shell.scheduler import Scheduler


def test_only_an_acting_scheduler_can_stall() -> None:
    scheduler = Scheduler(cast(Any, None), Metrics())
    scheduler.last_loop = time.monotonic() - 60

    assert not scheduler.stalled(30)  # a follower, parked until it leads
    scheduler.acting.set()
    assert scheduler.stalled(30)
    scheduler.last_loop = time.monotonic()
    assert not scheduler.stalled(30)
