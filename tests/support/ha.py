"""Two operator replicas and their Lease, as the failover tests drive and watch them."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch

from tests.support.operator import OperatorProcess
from tests.support.tasks import JobRecorder
from tests.support.wait import until

# Short timings keep the tests quick; the rules hold for any setting.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 0.5
LEASE_FLAGS = (
    "--lease-duration", str(LEASE_DURATION),
    "--renew-deadline", str(RENEW_DEADLINE),
    "--retry-period", str(RETRY_PERIOD),
)  # fmt: skip


def identity(process: OperatorProcess) -> str:
    found = until(
        lambda: re.search(r"taskmaster-operator (\S+) starting", process.logs()),
        timeout=10,
        message="the operator's identity in its log",
    )
    return found.group(1)


class LeaseHolders:
    """Watches the Lease and notes when each holder took it."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for event in watch.Watch().stream(
                self.leases.list_namespaced_lease, self.namespace, timeout_seconds=1
            ):
                holder = event["object"].spec.holder_identity or ""
                if not self.changes or self.changes[-1][1] != holder:
                    self.changes.append((time.time(), holder))

    def holder(self) -> str:
        return self.changes[-1][1] if self.changes else ""

    def taken_by(self, who: str, timeout: float = 30) -> float:
        """When `who` became the holder."""
        return until(
            lambda: next((at for at, holder in self.changes if holder == who), None),
            timeout=timeout,
            message=f"{who} holding the lease",
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def pair(
    operators: Callable[..., OperatorProcess], holders: LeaseHolders
) -> tuple[OperatorProcess, OperatorProcess, str, str]:
    """Two replicas: (leader, standby, leader identity, standby identity)."""
    first = operators(*LEASE_FLAGS).start()
    second = operators(*LEASE_FLAGS).start()
    ids = {identity(first): first, identity(second): second}
    until(lambda: holders.holder() in ids, timeout=30, message="a leader")
    leader_id = holders.holder()
    (standby_id,) = set(ids) - {leader_id}
    return ids[leader_id], ids[standby_id], leader_id, standby_id


def every_second(task: dict[str, Any]) -> dict[str, Any]:
    """A task running `task` every second, every missed second run once after a failover."""
    return {
        "every": "1s",
        "missedRunPolicy": "RunAll",
        "startingDeadlineSeconds": 60,
        "successfulJobsHistoryLimit": 100,
        "task": task,
    }


def assert_every_second_ran_once(recorder: JobRecorder, tasks: int) -> None:
    """Each of `tasks` tasks ran every second between its first and last run, once."""
    times: dict[str, list[int]] = defaultdict(list)
    for job in recorder.jobs():
        times[job.labels["taskmaster.dev/task"]].append(job.scheduled)
    assert len(times) == tasks
    for task, seen in times.items():
        assert len(seen) == len(set(seen)), f"{task}: a scheduled time ran twice"
        assert seen == list(range(seen[0], seen[-1] + 1)), f"{task}: missed times"
