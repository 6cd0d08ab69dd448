"""The API server goes away and comes back while the operator runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from kubernetes import client

from tests.conftest import LOCAL_KUBECONFIG
from tests.support.cluster import restart_component
from tests.support.operator import OperatorProcess
from tests.support.tasks import CONTAINER, Tasks
from tests.support.wait import until

CLUSTER_DIR = LOCAL_KUBECONFIG.parent / "kwok" / "clusters" / "taskmaster"


def api_answers(core_v1: client.CoreV1Api) -> bool:
    try:
        core_v1.list_namespace(limit=1, _request_timeout=2)
    except (urllib3.exceptions.HTTPError, OSError):
        return False
    return True


def test_api_server_restart(
    kubeconfig: Path,
    operators: Callable[..., OperatorProcess],
    tasks: Tasks,
    core_v1: client.CoreV1Api,
) -> None:
    if kubeconfig != LOCAL_KUBECONFIG:
        pytest.skip("restarts the local cluster's own kube-apiserver")
    # Leadership cannot be renewed while the API server is away: with a renew
    # deadline shorter than the outage, the times missed are downtime.
    operator = operators(
        "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5"
    ).start()  # fmt: skip
    recorder = tasks.recorder()
    base = {"every": "1s", "startingDeadlineSeconds": 60, "task": CONTAINER}
    tasks.create("catch-up", {**base, "missedRunPolicy": "RunAll"})
    tasks.create("skip", {**base, "missedRunPolicy": "Skip"})
    recorder.wait_for(3, "catch-up")

    down = time.time()
    restart_component(CLUSTER_DIR, "kube-apiserver", down_for=6)
    up = time.time()
    until(lambda: api_answers(core_v1), timeout=60, message="the API server back")
    recorder.wait_for(len(recorder.jobs("catch-up")) + 3, "catch-up", timeout=60)
    recorder.wait_for(len(recorder.jobs("skip")) + 3, "skip", timeout=60)

    assert operator.process is not None
    assert operator.process.poll() is None, "the operator is still running"
    operator.stop()
    recorder.close()
    caught_up = [job.scheduled for job in recorder.jobs("catch-up")]
    assert caught_up == list(range(caught_up[0], caught_up[-1] + 1)), "RunAll ran every second"
    skipped = {job.scheduled for job in recorder.jobs("skip")}
    outage = set(range(int(down) + 1, int(up) - 1))
    assert not skipped & outage, "Skip ran none of the seconds the API server was away"
    task = tasks.get("skip")
    assert task["status"]["missedRuns"] >= len(outage)
    assert any(entry["reason"] == "MissedRunPolicy" for entry in task["status"]["history"])
