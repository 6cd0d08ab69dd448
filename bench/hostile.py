"""The slowest single reconcile over the generated hostile corpus (pure, no cluster).

The same specs as the property test: each goes once through parse, decide,
render and status, timed in CPU time (as the time box counts) without the
garbage collector. The operator abandons one task's work at its time box;
this says how far below it the core stays.
"""

from __future__ import annotations

import gc
import time
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from tests.support.hostile import BACKFILLS, INSTANTS, LAGS, NAMES, SPECS, pipeline

from taskmaster.shell.timebox import TIME_BOX_SECONDS


def slowest_reconcile(specs: int) -> dict[str, Any]:
    seconds: list[float] = []

    @settings(
        max_examples=specs,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=SPECS, name=NAMES, now=INSTANTS, lag=LAGS, backfill=BACKFILLS)
    def measure(
        raw: dict[str, Any], name: str, now: datetime, lag: float | None, backfill: str | None
    ) -> None:
        gc.disable()
        try:
            started = time.process_time()
            pipeline(raw, name, now, lag, backfill)
            seconds.append(time.process_time() - started)
        finally:
            gc.enable()

    measure()
    seconds.sort()
    return {
        "specs": len(seconds),
        "slowest_ms": round(seconds[-1] * 1000, 2),
        "p99_ms": round(seconds[int(len(seconds) * 0.99) - 1] * 1000, 3),
        "time_box_ms": TIME_BOX_SECONDS * 1000,
    }
