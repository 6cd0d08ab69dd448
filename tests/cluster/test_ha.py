"""Two replicas and faults: SIGKILL, SIGTERM and SIGSTOP of the leader."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime

from kubernetes import client

from tests.support.ha import (
    LEASE_DURATION,
    LeaseHolders,
    assert_every_second_ran_once,
    every_second,
    pair,
)
from tests.support.operator import OperatorProcess
from tests.support.tasks import CONTAINER, JobRecorder, Tasks
from tests.support.wait import until

TASKS = 10


def burst(tasks: Tasks) -> JobRecorder:
    recorder = tasks.recorder()
    for i in range(TASKS):
        tasks.create(f"burst-{i}", every_second(CONTAINER))
    recorder.wait_for(3 * TASKS, timeout=30)
    return recorder


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
    assert_every_second_ran_once(recorder, TASKS)
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
    assert_every_second_ran_once(recorder, TASKS)
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

    assert_every_second_ran_once(recorder, TASKS)
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
