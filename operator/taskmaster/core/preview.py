"""The schedule preview: a task's next run times and its schedule in words.

One function for every surface (`kubectl taskmaster next`, `list`,
`describe`, the webhook's messages, the dashboard), so that they all say what
the operator will do: the times come from the task's own Timeline (window and
maxRuns applied) and the start of each run from the decision's own `due_at`
(jitter applied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from taskmaster.core.decide import due_at
from taskmaster.core.schedule import Cron, Crons, Every, RunAt, Schedule, describe_cron
from taskmaster.core.spec import TaskSpec
from taskmaster.core.times import rfc3339

# The most run times one preview lists: enough for a day of a task every
# 2 minutes, or a page of any other; a bound no request can raise.
MAX_PREVIEW = 1000


@dataclass(frozen=True)
class Upcoming:
    """One coming run: its scheduled time (which names its Job) and when it starts."""

    scheduled: datetime
    starts: datetime


def upcoming(spec: TaskSpec, key: str, after: datetime, count: int) -> list[Upcoming]:
    """The next `count` (at most MAX_PREVIEW) runs scheduled strictly after `after`.

    `key` is the task's `namespace/name`: it seeds the jitter, as it does for
    the operator.
    """
    times = islice(spec.timeline.times(after), max(0, min(count, MAX_PREVIEW)))
    return [Upcoming(time, due_at(key, spec, time)) for time in times]


def describe_schedule(spec: TaskSpec) -> str:
    """The schedule in plain words: `Every 15 minutes, UTC`, `At 02:30, Monday through
    Friday, Europe/Paris`, `Every 1 hour 30 minutes`, `Once, at 2026-05-01T12:00:00Z`;
    with the window, maxRuns and jitter when the spec has them."""
    words = [_words(spec.schedule)]
    timeline = spec.timeline
    if not isinstance(spec.schedule, RunAt):
        if timeline.start_at is not None:
            words.append(f"from {rfc3339(timeline.start_at)}")
        if timeline.end_at is not None:
            words.append(f"until {rfc3339(timeline.end_at)}")
        if timeline.max_runs is not None:
            words.append(f"at most {_count(timeline.max_runs, 'run')}")
    if spec.jitter_seconds:
        words.append(f"each started up to {_count(spec.jitter_seconds, 'second')} late (jitter)")
    return ", ".join(words)


def _words(schedule: Schedule) -> str:
    if isinstance(schedule, Cron):
        return f"{describe_cron(schedule)}, {schedule.zone.key}"
    if isinstance(schedule, Crons):
        each = [_words(cron) for cron in schedule.crons]
        return "; ".join([each[0], *(words[0].lower() + words[1:] for words in each[1:])])
    if isinstance(schedule, Every):
        return f"Every {_duration(schedule.interval)}"
    return f"Once, at {rfc3339(schedule.at)}"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _duration(interval: timedelta) -> str:
    """`1 hour 30 minutes`, `15 minutes`, `1 day`: whole seconds in words."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in _UNITS:
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(_count(amount, unit))
    text = " ".join(parts)
    return re.sub(r"^1 (\w+)$", r"\1", text)  # "Every hour", not "Every 1 hour"


def _count(amount: int, unit: str) -> str:
    return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"
