"""The scheduler's liveness and its per-task metric series."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from taskmaster.core.admission import parse_task
from taskmaster.core.decide import Plan
from taskmaster.core.names import Run, TaskRef
from taskmaster.core.render import render_job, rfc3339
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


class _RacingKube:
    """The API as the scheduler sees it while a Job finishes during a status write."""

    def __init__(self) -> None:
        self.during_patch: Callable[[], None] = lambda: None
        self.deleted: list[str] = []
        self.status: dict[str, Any] = {}

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> Any:
        self.during_patch()
        self.during_patch = lambda: None
        self.status = status
        return {}

    async def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)

    async def post_event(self, *_: Any) -> None:
        pass


def test_a_job_that_finishes_while_the_status_is_written_is_recorded_not_deleted() -> None:
    kube = _RacingKube()
    scheduler = Scheduler(cast(Any, kube), Metrics())
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    ref = TaskRef("ns", "t", "uid")
    task = {
        "metadata": {
            "namespace": "ns",
            "name": "t",
            "uid": "uid",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(created),
        },
        "spec": {"every": "1h", "jobTemplate": {"spec": {"template": {"spec": {}}}}},
    }
    scheduler.task_event("ADDED", task)
    scheduler.tasks["ns/t"].parse()
    spec = scheduler.tasks["ns/t"].spec
    assert spec is not None
    job = render_job(ref, spec, Run(created + timedelta(seconds=10)))
    job["metadata"]["resourceVersion"] = "2"
    scheduler.job_event("ADDED", job)
    finished = {
        **job,
        "metadata": {**job["metadata"], "resourceVersion": "3"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    kube.during_patch = lambda: scheduler.job_event("MODIFIED", finished)

    asyncio.run(scheduler.reconcile("ns/t"))
    asyncio.run(scheduler.reconcile("ns/t"))

    assert kube.deleted == []
    assert [entry["jobName"] for entry in kube.status["history"]] == [job["metadata"]["name"]]


def test_a_task_is_kept_without_its_managed_fields() -> None:
    scheduler = Scheduler(cast(Any, None), Metrics())
    metadata = {
        "namespace": "ns",
        "name": "t",
        "uid": "uid",
        "generation": 2,
        "resourceVersion": "7",
        "annotations": {"taskmaster.dev/run-now": "a"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    body = {"metadata": metadata, "spec": {"every": "1h"}, "status": {"phase": "Scheduled"}}

    scheduler.task_event("ADDED", body)

    kept = scheduler.tasks["ns/t"].body
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"] == {k: v for k, v in metadata.items() if k != "managedFields"}
    assert (kept["spec"], kept["status"]) == (body["spec"], body["status"])
    assert "managedFields" in metadata  # the watch's copy is left as it was


def test_only_job_updates_that_change_its_view_wake_the_task() -> None:
    scheduler = Scheduler(cast(Any, None), Metrics())
    created = datetime(2026, 5, 1, tzinfo=UTC)
    task = {
        "metadata": {"namespace": "ns", "name": "t", "uid": "uid", "generation": 1},
        "spec": {"every": "1h", "jobTemplate": {"spec": {"template": {"spec": {}}}}},
    }
    spec = parse_task(task, now=created)
    job = render_job(TaskRef("ns", "t", "uid"), spec, Run(created + timedelta(hours=1)))

    def update(version: int, status: dict[str, Any]) -> None:
        metadata = {**job["metadata"], "resourceVersion": str(version)}
        scheduler.job_event("MODIFIED", {**job, "metadata": metadata, "status": status})

    update(1, {"active": 1})
    assert scheduler._dirty == {"ns/t"}
    scheduler._dirty.clear()
    update(2, {"active": 0, "uncountedTerminatedPods": {"succeeded": ["p"]}})
    assert scheduler._dirty == set()
    update(3, {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1})
    assert scheduler._dirty == {"ns/t"}


def test_the_echo_of_a_held_task_version_wakes_no_reconcile() -> None:
    scheduler = Scheduler(cast(Any, None), Metrics())
    metadata = {"namespace": "ns", "name": "t", "uid": "uid", "resourceVersion": "5"}
    scheduler.task_event("ADDED", {"metadata": metadata, "spec": {}})
    scheduler._dirty.clear()

    # The status write's own event: the version the operator already holds.
    scheduler.task_event("MODIFIED", {"metadata": metadata, "spec": {}})
    assert scheduler._dirty == set()
    newer = {**metadata, "resourceVersion": "6", "annotations": {"taskmaster.dev/run-now": "a"}}
    scheduler.task_event("MODIFIED", {"metadata": newer, "spec": {}})
    assert scheduler._dirty == {"ns/t"}
    assert scheduler.tasks["ns/t"].body["metadata"]["resourceVersion"] == "6"
