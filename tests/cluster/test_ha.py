"""Two replicas and faults: SIGKILL, SIGTERM and SIGSTOP of the leader."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from kubernetes import client, watch

from tests.support.operator import OperatorProcess
from tests.support.tasks import CONTAINER, JobRecorder, Tasks
from tests.support.wait import until

# Short timings keep the tests quick; the rules hold for any setting.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 0.5
LEASE_FLAGS = (
    "--lease-duration", str(LEASE_DURATION),
    "--renew-deadline", str(RENEW_DEADLINE),
    "--retry-period", str(RETRY_PERIOD),
)  # fmt: skip
TASKS = 10


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


@pytest.fixture
def holders(api: client.ApiClient, namespace: str) -> Iterator[LeaseHolders]:
    watcher = LeaseHolders(api, namespace)
    yield watcher
    watcher.close()


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


def burst(tasks: Tasks) -> JobRecorder:
    recorder = tasks.recorder()
    spec = {
        "every": "1s",
        "missedRunPolicy": "RunAll",
        "startingDeadlineSeconds": 60,
        "successfulJobsHistoryLimit": 100,
        "task": CONTAINER,
    }
    for i in range(TASKS):
        tasks.create(f"burst-{i}", spec)
    recorder.wait_for(3 * TASKS, timeout=30)
    return recorder


def assert_every_second_ran_once(recorder: JobRecorder) -> None:
    times: dict[str, list[int]] = defaultdict(list)
    for job in recorder.jobs():
        times[job.labels["taskmaster.dev/task"]].append(job.scheduled)
    assert len(times) == TASKS
    for task, seen in times.items():
        assert len(seen) == len(set(seen)), f"{task}: a scheduled time ran twice"
        assert seen == list(range(seen[0], seen[-1] + 1)), f"{task}: missed times"


def test_sigkill_the_leader_the_standby_takes_over_without_duplicates_or_gaps(
    operators: Callable[..., OperatorProcess], tasks: Tasks, holders: LeaseHolders
) -> None:
    leader, standby, _, standby_id = pair(operators, holders)
    recorder = burst(tasks)

    killed = time.time()
    leader.kill()
    takeover = holders.taken_by(standby_id) - killed
    before = len(recorder.jobs())
    recorder.wait_for(before + 3 * TASKS, timeout=30)
    standby.stop()
    recorder.close()

    assert takeover <= LEASE_DURATION + 2, f"takeover took {takeover:.2f}s"
    assert_every_second_ran_once(recorder)
    print(f"SIGKILL takeover: {takeover:.2f}s; jobs: {len(recorder.jobs())}")


def test_sigterm_the_leader_hands_over_at_once(
    operators: Callable[..., OperatorProcess], tasks: Tasks, holders: LeaseHolders
) -> None:
    leader, standby, _, standby_id = pair(operators, holders)
    recorder = burst(tasks)

    terminated = time.time()
    assert leader.stop() == 0
    takeover = holders.taken_by(standby_id) - terminated
    before = len(recorder.jobs())
    recorder.wait_for(before + 2 * TASKS, timeout=30)
    standby.stop()
    recorder.close()

    assert takeover <= 3, f"takeover took {takeover:.2f}s"
    assert re.search(r"lease \S+: released$", leader.logs(), re.M)
    assert_every_second_ran_once(recorder)
    print(f"SIGTERM takeover: {takeover:.2f}s")


def test_a_frozen_leader_resumes_as_a_follower_and_writes_nothing(
    operators: Callable[..., OperatorProcess],
    tasks: Tasks,
    holders: LeaseHolders,
    api: client.ApiClient,
) -> None:
    leader, standby, leader_id, standby_id = pair(operators, holders)
    recorder = burst(tasks)

    leader.signal(signal.SIGSTOP)
    holders.taken_by(standby_id)
    time.sleep(1)  # the new leader works a while, the old one still frozen
    leader.signal(signal.SIGCONT)
    resumed = time.time()
    until(
        lambda: "is now a follower" in leader.logs(),
        timeout=LEASE_DURATION * 2,
        message="the resumed replica stepping down",
    )
    before = len(recorder.jobs())
    recorder.wait_for(before + 2 * TASKS, timeout=30)
    # The old leader first: stopping the standby would hand it the Lease back.
    leader.stop()
    standby.stop()
    recorder.close()

    assert_every_second_ran_once(recorder)
    response = client.EventsV1Api(api).list_namespaced_event(
        tasks.namespace, _preload_content=False
    )
    late_writes = [
        (event["reason"], event.get("note"), event["eventTime"])
        for event in json.loads(response.data)["items"]
        if event.get("reportingInstance") == leader_id
        and datetime.fromisoformat(event["eventTime"]).timestamp() > resumed
    ]
    assert late_writes == []
