"""The time box around one task's work, what the scheduler does when it overruns,
and the liveness endpoint that answers while the event loop is blocked."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from taskmaster.core import schedule
from taskmaster.core.names import Run
from taskmaster.core.render import render_job
from taskmaster.core.times import parse_time
from taskmaster.shell import cache as cache_module
from taskmaster.shell import reconcile as reconcile_module
from taskmaster.shell.health import Health
from taskmaster.shell.kube import ApiError
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.scheduler import Scheduler
from taskmaster.shell.timebox import Overrun, time_box
from tests.support.api import FakeApi
from tests.support.operator import free_port
from tests.support.tasks import task_object
from tests.support.wait import until


def _spin() -> None:
    while True:
        pass


def test_work_past_its_budget_is_abandoned() -> None:
    started = time.monotonic()
    with pytest.raises(Overrun), time_box(0.2):
        _spin()
    assert time.monotonic() - started < 5


def test_work_within_its_budget_is_left_alone() -> None:
    with time_box(0.2):
        result = sum(range(1000))
    assert result == 499500
    # No late alarm reaches code outside the box.
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:
        pass


def test_an_overrun_is_not_taken_for_the_boxed_code_s_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # parse_cron turns any exception of croniter's into "not a valid cron expression".
    monkeypatch.setattr(schedule, "croniter", lambda *_, **__: _spin())
    with pytest.raises(Overrun), time_box(0.2):
        schedule.parse_cron("1 2 3 4 5", ZoneInfo("UTC"), "")


def _task(spec: dict[str, Any]) -> dict[str, Any]:
    created = datetime.now(UTC) - timedelta(minutes=1)
    return task_object({**spec, "task": {"container": {"image": "busybox"}}}, created)


def _overruns(metrics: Metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value("taskmaster_overruns_total", {"operation": operation})
    return value or 0.0


def test_a_decision_past_its_time_box_marks_the_task_degraded_and_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeApi()
    scheduler = Scheduler(kube, Metrics())
    monkeypatch.setattr(reconcile_module, "TIME_BOX_SECONDS", 0.2)
    decisions = []

    def endless(*_: Any) -> Any:
        decisions.append(1)
        _spin()

    monkeypatch.setattr(reconcile_module, "decide", endless)
    scheduler.cache.task_event("ADDED", _task({"every": "10s"}))

    asyncio.run(scheduler.reconciler.reconcile("ns/t"))
    asyncio.run(scheduler.recorder.record("ns/t"))

    degraded = next(c for c in kube.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "DecisionOverrun")
    assert "took longer than 0.2s" in degraded["message"]
    assert ("Warning", "DecisionOverrun") in kube.events
    assert _overruns(scheduler.metrics, "decide") == 1
    # An event about the task during its back-off does not make it decide again.
    asyncio.run(scheduler.reconciler.reconcile("ns/t"))
    assert len(decisions) == 1
    # ... but after it, on its own: a wake-up is set.
    assert scheduler.queue.next_wake() is not None


def test_a_parse_past_its_time_box_makes_the_task_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeApi()
    scheduler = Scheduler(kube, Metrics())
    monkeypatch.setattr(cache_module, "TIME_BOX_SECONDS", 0.2)
    monkeypatch.setattr(cache_module, "parse_task", lambda *_, **__: _spin())
    scheduler.cache.task_event("ADDED", _task({"every": "10s"}))

    asyncio.run(scheduler.reconciler.reconcile("ns/t"))
    asyncio.run(scheduler.recorder.record("ns/t"))

    assert kube.status["phase"] == "Invalid"
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("spec: reading it took longer than 0.2s")
    assert ("Warning", "InvalidSpec") in kube.events
    assert _overruns(scheduler.metrics, "parse") == 1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our http:// URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_fails_while_the_event_loop_is_blocked() -> None:
    port = free_port()
    health = Health("127.0.0.1", port, limit=0.5, ready=lambda: True, stalled=lambda _: False)
    health.start()
    answers: list[tuple[int, str]] = []
    blocked = threading.Event()

    async def main() -> None:
        beat = asyncio.create_task(health.beat_forever())
        await asyncio.sleep(0.1)
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok")
        # Block the loop until the probe, from its own thread, has seen it fail.
        blocked.set()
        until(lambda: answers and answers[-1][0] == 500, timeout=10, message="healthz fails")
        beat.cancel()

    def failing() -> bool:
        answers.append(_get(f"http://127.0.0.1:{port}/healthz"))
        return answers[-1][0] == 500

    def probe() -> None:
        blocked.wait()
        until(failing, timeout=10, message="healthz fails")

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        asyncio.run(main())
    finally:
        prober.join()
        health.close()
    assert answers[-1][1].startswith("event loop blocked for")


def test_a_replaced_job_is_deleted_only_once_its_replacement_is_written() -> None:
    kube = FakeApi()
    scheduler = Scheduler(kube, Metrics())
    body = _task({"every": "10s", "concurrencyPolicy": "Replace"})
    scheduler.cache.task_event("ADDED", body)
    task = scheduler.cache.tasks["ns/t"]
    task.parse(scheduler.clock())
    assert task.spec is not None
    created = parse_time(body["metadata"]["creationTimestamp"])
    assert created is not None
    older = render_job(task.ref, task.spec, Run(created + timedelta(seconds=10)))
    older["metadata"]["resourceVersion"] = "2"
    scheduler.cache.job_event("ADDED", older)
    older_name = older["metadata"]["name"]

    asyncio.run(
        scheduler.reconciler.reconcile("ns/t")
    )  # a newer time is due: it replaces the older run

    assert kube.calls[0].startswith("create ")
    assert f"delete {older_name}" not in kube.calls
    assert not scheduler.cache.jobs["ns/t"][older_name].active  # being replaced
    kube.fail_status = True
    with pytest.raises(ApiError):
        asyncio.run(scheduler.recorder.record("ns/t"))
    assert f"delete {older_name}" not in kube.calls
    # The replica stops acting before the status is written: the Job is active again.
    scheduler.recorder.forget()
    assert scheduler.cache.jobs["ns/t"][older_name].active

    asyncio.run(scheduler.reconciler.reconcile("ns/t"))  # decided afresh: the older run is replaced
    kube.fail_status = False
    asyncio.run(scheduler.recorder.record("ns/t"))
    writes = [call for call in kube.calls if not call.startswith("event ")]
    assert writes[-2:] == ["status t", f"delete {older_name}"]
    assert older_name not in scheduler.cache.jobs["ns/t"]
