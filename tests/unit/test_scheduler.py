"""The scheduler's liveness and its per-task metric series."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

from taskmaster.core.decide import Plan
from taskmaster.core.names import TaskRef
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.scheduler import Scheduler, Task


def test_only_an_acting_scheduler_can_stall() -> None:
    scheduler = Scheduler(cast(Any, None), Metrics())
    scheduler.last_loop = time.monotonic() - 60

    assert not scheduler.stalled(30)  # a follower, parked until it leads
    scheduler.acting.set()
    assert scheduler.stalled(30)
    scheduler.last_loop = time.monotonic()
    assert not scheduler.stalled(30)


def _series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def test_a_task_without_a_next_run_has_no_next_schedule_series() -> None:
    metrics = Metrics()
    scheduler = Scheduler(cast(Any, None), metrics)
    task = Task(TaskRef("ns", "t", "uid"), {})
    due = datetime(2026, 5, 1, tzinfo=UTC)

    scheduler._observe(task, Plan(due, None, next_run_time=due), [])
    assert _series(metrics, "taskmaster_next_schedule_time_seconds") == [
        {"namespace": "ns", "task": "t"}
    ]
    scheduler._observe(task, Plan(due, None), [])  # completed, suspended, ...
    assert _series(metrics, "taskmaster_next_schedule_time_seconds") == []


def test_a_replica_that_stops_scheduling_drops_every_task_series() -> None:
    metrics = Metrics()
    for gauge in (metrics.active_runs, metrics.next_schedule_time, metrics.last_schedule_time):
        gauge.labels("ns", "t").set(1)

    metrics.forget_tasks()

    names = ("active_runs", "next_schedule_time_seconds", "last_schedule_time_seconds")
    assert all(_series(metrics, f"taskmaster_{name}") == [] for name in names)
