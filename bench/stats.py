"""The benchmark's arithmetic: pure functions over what the watch saw."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.api import ATTEMPT_LABEL, SCHEDULED_TIME_LABEL, TASK_LABEL, SeenJob


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in [0, 100]) of values; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Lags:
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, lags: Sequence[float]) -> Lags:
        return cls(
            count=len(lags),
            p50=percentile(lags, 50),
            p90=percentile(lags, 90),
            p99=percentile(lags, 99),
            max=max(lags, default=math.nan),
        )


def first_per_owner(jobs: Iterable[SeenJob]) -> dict[str, SeenJob]:
    """Each owner's first Job: a scheduler that falls behind a `* * * * *`
    schedule creates later minutes' Jobs too, and only the first one counts."""
    first: dict[str, SeenJob] = {}
    for job in sorted(jobs, key=lambda job: job.seen_at):
        first.setdefault(job.owner, job)
    return first


def burst_lags(jobs: Iterable[SeenJob], minute: float) -> list[float]:
    """Per object, how long after the scheduled minute its first Job appeared."""
    return sorted(job.seen_at - minute for job in first_per_owner(jobs).values())


def create_rate(lags: Sequence[float]) -> float:
    """Jobs a second from the first to the last creation of a burst."""
    if len(lags) < 2 or max(lags) == min(lags):
        return math.nan
    return (len(lags) - 1) / (max(lags) - min(lags))


def fire_lags(jobs: Iterable[SeenJob], start: float, end: float) -> list[float]:
    """Lags of the runs scheduled in [start, end): when each Job appeared minus its time."""
    return sorted(
        job.seen_at - job.scheduled
        for job in jobs
        if job.scheduled is not None and start <= job.scheduled < end
    )


def on_time_after(jobs: Iterable[SeenJob], start: float, limit: float) -> float:
    """Seconds from `start` until runs are on time: the appearance of the last run
    scheduled after `start` that was more than `limit` late (0 when none was)."""
    late = [
        job.seen_at - start
        for job in jobs
        if job.scheduled is not None
        and job.scheduled >= start
        and job.seen_at - job.scheduled > limit
    ]
    return max(late, default=0.0)


def duplicates(jobs_labels: Iterable[Mapping[str, str]]) -> int:
    """Runs started more than once: TaskMaster's Jobs beyond the first for one task,
    time and attempt (other Jobs are not counted)."""
    runs = Counter(
        (labels[TASK_LABEL], labels[SCHEDULED_TIME_LABEL], labels.get(ATTEMPT_LABEL))
        for labels in jobs_labels
        if TASK_LABEL in labels and SCHEDULED_TIME_LABEL in labels
    )
    return sum(count - 1 for count in runs.values())
