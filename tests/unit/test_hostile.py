"""Generated hostile specs through the whole pure pipeline: parse, decide, render, status.

Whatever a ScheduledTask holds (the schema can be bypassed: an older CRD, the
webhook off), the core either refuses it with InvalidSpec naming a field, or
acts on it within a bounded time with a bounded number of runs. Every example
that failed once is kept as an explicit `@example`.
"""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings

from taskmaster.shell.timebox import TIME_BOX_SECONDS
from tests.support.hostile import BACKFILLS, INSTANTS, LAGS, NAMES, SPECS, C, pipeline

# Enough to reach the rare corners in every make test, derandomized so CI is stable.
EXAMPLES = 20_000
# What one pass through the pipeline may take at most: the shell abandons a
# decision at TIME_BOX_SECONDS, the core must stay far below it.
BUDGET_SECONDS = TIME_BOX_SECONDS / 4


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=SPECS, name=NAMES, now=INSTANTS, lag=LAGS, backfill=BACKFILLS)
# The objects of the hardening issue, and what this test found while it was written.
@example(
    {**C, "every": "10s", "maxRuns": 2147483648}, "t", datetime(2026, 12, 4, tzinfo=UTC), None, None
)
@example(
    {**C, "every": "10s", "startingDeadlineSeconds": 2147483648},
    "t",
    datetime(2026, 12, 4, tzinfo=UTC),
    86_400.0,
    None,
)
@example(
    {**C, "runAt": "9999-12-31T23:59:59-01:00"}, "t", datetime(2026, 12, 4, tzinfo=UTC), None, None
)
@example(
    {**C, "every": "10s", "startAt": "0001-01-01T00:30:00+01:00"},
    "t",
    datetime(2026, 12, 4, tzinfo=UTC),
    None,
    None,
)
@example({**C, "every": "99999999999h"}, "t", datetime(2026, 12, 4, tzinfo=UTC), None, None)
@example({**C, "every": "87600000h"}, "t", datetime(2026, 12, 4, tzinfo=UTC), None, None)
@example(
    {**C, "every": "10s", "jitterSeconds": 2**62},
    "t",
    datetime(2026, 12, 4, tzinfo=UTC),
    None,
    None,
)
@example(
    {**C, "every": "10s", "timeZone": "A" * 300}, "t", datetime(2026, 12, 4, tzinfo=UTC), None, None
)
@example({**C, "schedule": "0 0 29 2 *"}, "t", datetime(2099, 12, 31, tzinfo=UTC), None, None)
@example(
    {**C, "every": "1s", "missedRunPolicy": "RunAll", "startingDeadlineSeconds": 86400},
    "t",
    datetime(2026, 12, 4, tzinfo=UTC),
    86_400.0,
    None,
)
@example(
    {**C, "schedule": "* * * 1 1 *", "startingDeadlineSeconds": 86400},
    "t",
    datetime(2027, 1, 1, 23, tzinfo=UTC),
    10 * 86_400.0,
    None,
)
@example({**C, "every": "1m"}, "t", datetime(1970, 1, 1, tzinfo=UTC), None, None)
# Found by review: a walk that never jumped (a gap in the first stretch), and a
# nearest weekday that no month of the schedule has.
@example(
    {**C, "schedule": "* * 0,9-23 * * *", "startingDeadlineSeconds": 86400},
    "t",
    datetime(2026, 1, 2, 23, 59, 59, tzinfo=UTC),
    82_829.0,
    None,
)
@example({**C, "schedule": "0 0 31W 2 MON"}, "t", datetime(2026, 12, 4, tzinfo=UTC), 86_400.0, None)
# Backfills of the longest ranges: counted, not walked, whatever the schedule.
@example(
    {**C, "schedule": "* * * * * *"},
    "t",
    datetime(2099, 12, 31, tzinfo=UTC),
    None,
    '{"token": "b", "from": "1970-01-01T00:00:00Z", "to": "2099-12-30T00:00:00Z"}',
)
@example(
    {**C, "every": "1s"},
    "t",
    datetime(2099, 12, 31, tzinfo=UTC),
    None,
    '{"token": "b", "from": "1970-01-01T00:00:00Z", "to": "2099-12-30T00:00:00Z"}',
)
def test_any_spec_is_refused_naming_a_field_or_acted_on_within_bounds(
    raw: dict[str, Any],
    name: str,
    now: datetime,
    lag: float | None,
    backfill: str | None,
) -> None:
    # CPU time, as the time box counts it (a busy machine stretches wall time),
    # and without the collector: a full collection of Hypothesis' own garbage
    # can take a second, and it is not the core's work.
    gc.disable()
    try:
        started = time.process_time()
        pipeline(raw, name, now, lag, backfill)
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    assert elapsed < BUDGET_SECONDS
