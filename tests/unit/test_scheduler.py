"""The scheduler's liveness and its per-task metric series."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from taskmaster.core.decide import Plan
from taskmaster.core.names import Run, TaskRef
from taskmaster.core.render import render_job
from taskmaster.core.spec import parse_task
from taskmaster.core.times import rfc3339
from taskmaster.shell.cache import Task
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.ratelimit import TokenBucket
from taskmaster.shell.scheduler import Scheduler
from tests.support.api import FakeApi, NoApi
from tests.support.tasks import CONTAINER, task_object


def test_only_an_acting_scheduler_can_stall() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
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
    scheduler = Scheduler(NoApi(), metrics)
    task = Task(TaskRef("ns", "t", "uid"))
    due = datetime(2026, 5, 1, tzinfo=UTC)

    scheduler.reconciler.observe(task, Plan(due, None, next_run_time=due), [])
    assert _series(metrics, "taskmaster_next_schedule_time_seconds") == [
        {"namespace": "ns", "task": "t"}
    ]
    scheduler.reconciler.observe(task, Plan(due, None), [])  # completed, suspended, ...
    assert _series(metrics, "taskmaster_next_schedule_time_seconds") == []


def test_a_replica_that_stops_scheduling_drops_every_task_series() -> None:
    metrics = Metrics()
    series = metrics.tasks.of("ns", "t")
    series.active, series.next_schedule_time, series.last_schedule_time = 1, 1.0, 1.0
    series.count_started("schedule")

    metrics.forget_tasks()

    names = ("active_runs", "next_schedule_time_seconds", "last_schedule_time_seconds")
    assert all(_series(metrics, f"taskmaster_{name}") == [] for name in names)
    # Its counters are its own (scraped per replica), and stay.
    assert _series(metrics, "taskmaster_runs_started_total") == [
        {"namespace": "ns", "task": "t", "trigger": "schedule"}
    ]


def test_a_deleted_task_leaves_no_series_behind() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    body = {"metadata": {"namespace": "ns", "name": "t", "uid": "uid"}, "spec": {}}
    scheduler.cache.task_event("ADDED", body)
    series = scheduler.metrics.tasks.of("ns", "t")
    series.count_started("schedule")
    series.count_finished("Succeeded", 1)
    series.active = 0

    scheduler.cache.task_event("DELETED", body)

    assert [
        sample
        for family in scheduler.metrics.registry.collect()
        for sample in family.samples
        if sample.labels.get("task") == "t"
    ] == []


def test_a_job_that_finishes_while_the_status_is_written_is_recorded_not_deleted() -> None:
    kube = FakeApi()
    scheduler = Scheduler(kube, Metrics())
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    ref = TaskRef("ns", "t", "uid")
    task = task_object(
        {"every": "1h", "jobTemplate": {"spec": {"template": {"spec": {}}}}}, created
    )
    scheduler.cache.task_event("ADDED", task)
    scheduler.cache.tasks["ns/t"].parse(scheduler.clock())
    spec = scheduler.cache.tasks["ns/t"].spec
    assert spec is not None
    job = render_job(ref, spec, Run(created + timedelta(seconds=10)))
    job["metadata"]["resourceVersion"] = "2"
    scheduler.cache.job_event("ADDED", job)
    finished = {
        **job,
        "metadata": {**job["metadata"], "resourceVersion": "3"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    kube.during_patch = lambda: scheduler.cache.job_event("MODIFIED", finished)

    for _ in range(2):
        asyncio.run(scheduler.reconciler.reconcile("ns/t"))
        asyncio.run(scheduler.recorder.record("ns/t"))

    assert not [call for call in kube.calls if call.startswith(("create ", "delete "))]
    assert [entry["jobName"] for entry in kube.status["history"]] == [job["metadata"]["name"]]


def test_a_task_keeps_its_spec_only_until_it_is_parsed() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    metadata = {
        "namespace": "ns",
        "name": "t",
        "uid": "uid",
        "generation": 2,
        "resourceVersion": "7",
        "creationTimestamp": "2026-05-01T00:00:00Z",
        "annotations": {"taskmaster.dev/run-now": "a"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    spec = {"every": "1h", "task": CONTAINER}
    body = {"metadata": metadata, "spec": spec, "status": {"phase": "Scheduled"}}

    scheduler.cache.task_event("ADDED", body)
    task = scheduler.cache.tasks["ns/t"]
    assert (task.status, task.run_now_token, task.version) == (body["status"], "a", 7)
    assert task.spec_source is not None
    assert "managedFields" in metadata  # the watch's copy is left as it was

    task.parse(datetime(2026, 5, 2, tzinfo=UTC))
    assert task.spec is not None
    assert task.spec.timeline.next(None) == datetime(2026, 5, 1, 1, tzinfo=UTC)
    assert task.spec_source is None
    # Its own status write comes back: same generation, nothing to parse again.
    task.keep({**body, "metadata": {**metadata, "resourceVersion": "8"}})
    assert task.spec_source is None
    # The spec changed: a new generation, parsed anew.
    edited = {**metadata, "resourceVersion": "9", "generation": 3}
    task.keep({**body, "metadata": edited, "spec": {**spec, "every": "2h"}})
    task.parse(datetime(2026, 5, 2, tzinfo=UTC))
    assert task.spec.timeline.next(None) == datetime(2026, 5, 1, 2, tzinfo=UTC)


def reconciles(scheduler: Scheduler) -> list[str]:
    """The tasks whose reconcile the loop would start now (and, for the test, has run)."""
    taken = scheduler.queue.take()
    for key, _ in taken:
        scheduler.queue.done(key)
    return [key for key, record in taken if not record]


def test_only_job_updates_that_change_its_view_wake_the_task() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    created = datetime(2026, 5, 1, tzinfo=UTC)
    task = {
        "metadata": {"namespace": "ns", "name": "t", "uid": "uid", "generation": 1},
        "spec": {"every": "1h", "jobTemplate": {"spec": {"template": {"spec": {}}}}},
    }
    spec = parse_task(task, now=created)
    job = render_job(TaskRef("ns", "t", "uid"), spec, Run(created + timedelta(hours=1)))

    def update(version: int, status: dict[str, Any]) -> None:
        metadata = {**job["metadata"], "resourceVersion": str(version)}
        scheduler.cache.job_event("MODIFIED", {**job, "metadata": metadata, "status": status})

    update(1, {"active": 1})
    assert reconciles(scheduler) == ["ns/t"]
    update(2, {"active": 0, "uncountedTerminatedPods": {"succeeded": ["p"]}})
    assert reconciles(scheduler) == []
    update(3, {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1})
    assert reconciles(scheduler) == ["ns/t"]


def test_the_echo_of_a_held_task_version_wakes_no_reconcile() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    metadata = {"namespace": "ns", "name": "t", "uid": "uid", "resourceVersion": "5"}
    scheduler.cache.task_event("ADDED", {"metadata": metadata, "spec": {}})
    reconciles(scheduler)

    # The status write's own event: the version the operator already holds.
    scheduler.cache.task_event("MODIFIED", {"metadata": metadata, "spec": {}})
    assert reconciles(scheduler) == []
    newer = {**metadata, "resourceVersion": "6", "annotations": {"taskmaster.dev/run-now": "a"}}
    scheduler.cache.task_event("MODIFIED", {"metadata": newer, "spec": {}})
    assert reconciles(scheduler) == ["ns/t"]
    assert scheduler.cache.tasks["ns/t"].version == 6


def _task(
    name: str,
    schedule: str,
    status: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    created = created or datetime.now(UTC) - timedelta(seconds=2)
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(created),
        },
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {}}}}},
        **({"status": status} if status else {}),
    }


async def _run_until(scheduler: Scheduler, done: Callable[[], bool]) -> None:
    scheduler.acting.set()
    loop = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            while not done():
                scheduler.idle.clear()
                await scheduler.idle.wait()
    finally:
        loop.cancel()


def test_runs_falling_due_together_start_before_any_status_is_written() -> None:
    kube = FakeApi()
    # The tasks were made a second before their first run fell due, and time stands
    # still half a second after it, while this replica has been acting all along.
    now = datetime(2026, 5, 1, tzinfo=UTC)
    scheduler = Scheduler(kube, Metrics(), clock=lambda: now + timedelta(seconds=0.5))
    scheduler.reconciler.since = now - timedelta(minutes=1)
    tasks = 300  # several times the reconciles in flight at once
    for i in range(tasks):
        kube.add(scheduler, _task(f"t{i}", "* * * * * *", created=now - timedelta(seconds=1)))

    def written() -> bool:
        held = scheduler.cache.tasks.values()
        return not scheduler.queue.running and all(task.phase for task in held)

    asyncio.run(_run_until(scheduler, written))

    verbs = [call.split()[0] for call in kube.calls]
    assert verbs[:tasks] == ["create"] * tasks
    # One run each: one Job and one status write each, every Job first.
    assert sorted(call for call in kube.calls if call.startswith("status ")) == sorted(
        f"status t{i}" for i in range(tasks)
    )
    assert (Counter(verbs)["create"], Counter(verbs)["status"]) == (tasks, tasks)
    assert all(task.unwritten is None for task in scheduler.cache.tasks.values())


def test_after_a_start_the_tasks_next_due_are_reconciled_first() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    now = datetime.now(UTC).replace(microsecond=0)
    due = {f"t{i}": now + timedelta(minutes=1 + (37 * i) % 100) for i in range(100)}
    for name, at in due.items():
        status = {"observedGeneration": 1, "nextRunTime": rfc3339(at)}
        scheduler.cache.task_event("ADDED", _task(name, "0 * * * *", status))
    scheduler.cache.task_event("ADDED", _task("new", "0 * * * *"))  # no status: first of all
    # The start-up listing of Jobs queues their tasks too, as urgent as "now".
    for name in due:
        spec = scheduler.cache.tasks[f"ns/{name}"]
        spec.parse(now)
        assert spec.spec is not None
        job = render_job(spec.ref, spec.spec, Run(now - timedelta(hours=1)))
        scheduler.cache.job_event(
            None, {**job, "metadata": {**job["metadata"], "resourceVersion": "2"}}
        )
    scheduler.start_acting()

    first = [key for key, _ in scheduler.queue.take()]
    assert first[0] == "ns/new"
    soonest = sorted(due, key=lambda name: due[name])
    assert first[1:] == [f"ns/{name}" for name in soonest[: len(first) - 1]]

    # A wake-up falling due goes ahead of the rest of the start-up pass.
    for key in first:
        scheduler.queue.done(key)
    scheduler.poke("ns/" + soonest[-1], now.timestamp())
    assert scheduler.queue.take()[0] == ("ns/" + soonest[-1], False)


def test_a_stopping_leader_writes_what_it_decided_and_starts_nothing_new() -> None:
    kube = FakeApi()
    scheduler = Scheduler(kube, Metrics())
    kube.add(scheduler, _task("t", "0 0 1 1 *"))
    asyncio.run(scheduler.reconciler.reconcile("ns/t"))
    assert scheduler.cache.tasks["ns/t"].unwritten is not None
    kube.add(scheduler, _task("other", "0 0 1 1 *"))

    async def stop() -> None:
        scheduler.acting.set()
        loop = asyncio.create_task(scheduler.run())
        await scheduler.flush(5)
        loop.cancel()

    asyncio.run(stop())
    assert kube.calls == ["status t"]
    assert scheduler.cache.tasks["ns/t"].unwritten is None


def test_a_task_keeps_when_its_spec_last_changed_from_its_managed_fields() -> None:
    scheduler = Scheduler(NoApi(), Metrics())
    metadata = {
        "namespace": "ns",
        "name": "t",
        "uid": "uid",
        "resourceVersion": "5",
        "managedFields": [
            {"manager": "kubectl", "time": "2026-05-01T12:20:00Z", "fieldsV1": {"f:spec": {}}},
            {
                "manager": "taskmaster",
                "time": "2026-05-01T12:25:00Z",
                "subresource": "status",
                "fieldsV1": {"f:status": {}},
            },
            {"manager": "labeller", "time": "2026-05-01T12:21:00Z", "fieldsV1": {"f:metadata": {}}},
        ],
    }

    scheduler.cache.task_event("ADDED", {"metadata": metadata, "spec": {}})

    assert scheduler.cache.tasks["ns/t"].spec_changed_at == datetime(2026, 5, 1, 12, 20, tzinfo=UTC)


def test_runs_over_the_cap_wait_and_a_freed_slot_starts_the_oldest() -> None:
    kube = FakeApi()
    now = datetime(2026, 5, 1, 0, 1, 5, tzinfo=UTC)
    scheduler = Scheduler(kube, Metrics(), max_active_runs=1, clock=lambda: now)
    scheduler.reconciler.since = now - timedelta(hours=1)
    _three_due_at_once(scheduler, kube)

    assert [call for call in kube.calls if call.startswith("create ")] == ["create a-1777593660"]
    assert (scheduler.slots.in_flight, scheduler.slots.waiting) == (1, 2)
    assert kube.events.count(("Warning", "WaitingForSlot")) == 2
    assert scheduler.slots.wake() == []  # no slot free

    # The run ends: its slot goes to a task that waited, one at a time.
    [job] = scheduler.cache.jobs["ns/a"].values()
    body = render_job(scheduler.cache.tasks["ns/a"].ref, _spec(scheduler, "a"), job.run)
    body["metadata"]["resourceVersion"] = "9"
    body["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    scheduler.cache.job_event("MODIFIED", body)
    [(woken, _)] = scheduler.slots.wake()
    asyncio.run(scheduler.reconciler.reconcile(woken))

    assert [call for call in kube.calls if call.startswith("create ")][1:] == [
        f"create {woken.removeprefix('ns/')}-1777593660"
    ]
    assert scheduler.slots.waiting == 1
    assert kube.events.count(("Warning", "WaitingForSlot")) == 2  # once per wait


def _three_due_at_once(scheduler: Scheduler, kube: FakeApi) -> None:
    """Tasks a, b and c, each first due at 00:01:00 (a created first), each reconciled
    and its status recorded once."""
    for i, name in enumerate(("a", "b", "c")):
        created = datetime(2026, 5, 1, tzinfo=UTC) - timedelta(seconds=50 - i)
        kube.add(scheduler, _task(name, "* * * * *", created=created))
    for name in ("a", "b", "c"):
        asyncio.run(scheduler.reconciler.reconcile(f"ns/{name}"))
        asyncio.run(scheduler.recorder.record(f"ns/{name}"))


def _spec(scheduler: Scheduler, name: str) -> Any:
    spec = scheduler.cache.tasks[f"ns/{name}"].spec
    assert spec is not None
    return spec


class Now:
    """A clock the test moves, for the scheduler and its rate limiter alike."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def seconds(self) -> float:
        return self.at.timestamp()


def _records(scheduler: Scheduler) -> list[str]:
    """The keys whose record step the queue hands out now (reconciles set aside)."""
    records = []
    while ops := scheduler.queue.take():
        for key, record in ops:
            scheduler.queue.done(key)
            records += [key] if record else []
    return records


def test_a_status_recording_only_runs_shed_for_the_cap_waits_for_its_budget() -> None:
    kube = FakeApi()
    now = Now(datetime(2026, 5, 1, 0, 1, 5, tzinfo=UTC))
    # While the cap binds, a hundredth of 100 QPS with a burst of 100: one record at
    # once, then one a second.
    limiter = TokenBucket(qps=100, burst=100, clock=now.seconds)
    scheduler = Scheduler(kube, Metrics(), max_active_runs=1, limiter=limiter, clock=now)
    scheduler.reconciler.since = now() - timedelta(hours=1)
    _three_due_at_once(scheduler, kube)
    _records(scheduler)

    # Past the deadline (60 s) of the 00:01 runs that waited, b and c record them
    # Missed, and wait for slots for their 00:02 runs: the cap still binds.
    now.at = datetime(2026, 5, 1, 0, 2, 6, tzinfo=UTC)
    for name in ("b", "c"):
        asyncio.run(scheduler.reconciler.reconcile(f"ns/{name}"))
    missed = scheduler.cache.tasks["ns/c"].unwritten
    assert missed is not None
    assert missed.status["history"][0]["reason"] == "MaxActiveRuns"
    assert _records(scheduler) == []  # in line, not queued
    assert scheduler.recorder.release() == ["ns/b"]
    assert scheduler.recorder.release() == []
    assert _records(scheduler) == ["ns/b"]  # queued by its release
    now.at += timedelta(seconds=1)
    assert scheduler.recorder.release() == ["ns/c"]
    assert _records(scheduler) == ["ns/c"]
    for name in ("b", "c"):
        asyncio.run(scheduler.recorder.record(f"ns/{name}"))
    assert [c for c in kube.calls if c in ("status b", "status c")] == ["status b", "status c"] * 2

    # A deferred record with news of its own is queued at once: a's run ends, and
    # c (deferred again by a later miss) starts a run in the freed slot.
    now.at = datetime(2026, 5, 1, 0, 3, 7, tzinfo=UTC)
    asyncio.run(scheduler.reconciler.reconcile("ns/c"))
    assert scheduler.recorder.deferred == deque(["ns/c"])
    assert _records(scheduler) == []
    [job] = scheduler.cache.jobs["ns/a"].values()
    body = render_job(scheduler.cache.tasks["ns/a"].ref, _spec(scheduler, "a"), job.run)
    body["metadata"]["resourceVersion"] = "9"
    body["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    scheduler.cache.job_event("MODIFIED", body)
    asyncio.run(scheduler.reconciler.reconcile("ns/c"))

    assert [call for call in kube.calls if call.startswith("create c-")] == ["create c-1777593780"]
    assert "ns/c" in _records(scheduler)
    assert scheduler.recorder.release() == []


def test_events_over_their_budget_are_dropped_and_counted() -> None:
    kube = FakeApi()
    metrics = Metrics()
    now = Now(datetime(2026, 5, 1, 0, 1, 5, tzinfo=UTC))
    # A fifth of 5 QPS with a burst of 5 (no run waits for a slot): one Event, then
    # one a second.
    limiter = TokenBucket(qps=5, burst=5, clock=now.seconds)
    scheduler = Scheduler(kube, metrics, limiter=limiter, clock=now)
    scheduler.reconciler.since = now() - timedelta(hours=1)
    for name in ("a", "b"):
        kube.add(scheduler, _task(name, "* * * * *", created=now() - timedelta(minutes=5)))
        asyncio.run(scheduler.reconciler.reconcile(f"ns/{name}"))
        asyncio.run(scheduler.recorder.record(f"ns/{name}"))

    assert [c for c in kube.calls if c.split()[0] in ("create", "status")] == [
        "create a-1777593660",
        "status a",
        "create b-1777593660",
        "status b",
    ]
    assert kube.events == [("Normal", "JobCreated")]
    dropped = metrics.registry.get_sample_value(
        "taskmaster_events_dropped_total", {"reason": "JobCreated"}
    )
    assert dropped == 1
