"""Hostile objects beside a healthy task: each is refused at apply time or ends
Invalid naming its field, within seconds, and the healthy task keeps every run.

The webhook is off (its failure policy is Ignore, so this is also what happens
whenever it is down): what the CRD's schema lets through, only the operator's
parser stands between it and the schedule of every other task.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.operator import OperatorProcess
from tests.support.tasks import Tasks, condition, phase

CONTAINER = {"task": {"container": {"image": "busybox:1.36"}}}
# (field, values): values the schema may or may not let through, each hostile.
HOSTILE: list[tuple[str, list[Any]]] = [
    ("spec.maxRuns", [2147483648, 10**6, 1001]),
    ("spec.startingDeadlineSeconds", [2147483648, 86401]),
    ("spec.runAt", ["9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z"]),
    ("spec.startAt", ["0001-01-01T00:30:00+01:00", "2200-01-01T00:00:00Z"]),
    ("spec.every", ["99999999999h", "87600000h", "8785h"]),
    ("spec.jitterSeconds", [2**62, 86401]),
    ("spec.timeZone", ["A" * 64, "../../etc/passwd", "Mars/Olympus", "Europe/"]),
    (
        "spec.schedule",
        ["*/0 * * * *", "R R * * *", "0 0 31 2 *", "1-99999 * * * *", "* " * 99 + "*"],
    ),
    ("spec.retry.backoff.factor", [1e300, 11]),
    ("spec.timeoutSeconds", [2**62, 2592001]),
]


def _hostile_batch(seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` objects, each with one hostile field (generated from `seed`)."""
    draw = random.Random(seed)  # noqa: S311 - a reproducible draw, not a secret
    batch = []
    for _ in range(count):
        field, values = draw.choice(HOSTILE)
        value = draw.choice(values)
        spec: dict[str, Any] = {**CONTAINER}
        if field not in ("spec.runAt", "spec.every", "spec.schedule"):
            spec["every"] = "10s"
        target = spec
        *parents, leaf = field.split(".")[1:]
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
        batch.append((field, spec))
    return batch


def _create(tasks: Tasks, name: str, spec: dict[str, Any]) -> ApiException | None:
    try:
        tasks.create(name, spec)
    except ApiException as error:
        return error
    return None


def _refused_naming(error: ApiException, field: str) -> bool:
    return error.status == 422 and field in json.loads(error.body or "{}").get("message", "")


@pytest.mark.usefixtures("operator")
def test_hostile_objects_end_refused_or_invalid_and_the_healthy_task_keeps_every_run(
    tasks: Tasks, operator: OperatorProcess
) -> None:
    recorder = tasks.recorder()
    tasks.create("healthy", {"every": "2s", **CONTAINER})
    recorder.wait_for(2, "healthy", timeout=30)

    admitted = []
    for index, (field, spec) in enumerate(_hostile_batch(seed=15, count=24)):
        name = f"hostile-{index}"
        refused = _create(tasks, name, spec)
        if refused is None:
            admitted.append((name, field))
        else:
            assert _refused_naming(refused, field), (field, refused.body)
    assert admitted, "some hostile objects get past the schema: the operator's parser sees them"
    for name, field in admitted:
        task = tasks.wait(name, lambda t: phase(t) == "Invalid", timeout=10)
        ready = condition(task, "Ready")
        assert ready["message"].startswith(f"{field}:"), (name, ready["message"])
        assert tasks.jobs(name) == []

    seen = len(recorder.jobs("healthy"))
    recorder.wait_for(seen + 5, "healthy", timeout=30)
    recorder.close()
    times = sorted(job.scheduled for job in recorder.jobs("healthy"))
    assert times == list(range(times[0], times[-1] + 1, 2)), "a run every 2 s, none lost"
    assert operator.process is not None
    assert operator.process.poll() is None, "the operator is still running"
    assert "taskmaster_overruns_total" in operator.metrics()
