"""A thousand tasks: every one is kept on time (a generous bound; the real
performance figures come from the benchmark, not from tests)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.operator import OperatorProcess
from tests.support.tasks import CONTAINER, Tasks
from tests.support.wait import until

COUNT = 1000
pytestmark = pytest.mark.scale


def test_a_thousand_tasks_all_fire_on_time(operator: OperatorProcess, tasks: Tasks) -> None:
    recorder = tasks.recorder()
    # Every minute at a second hashed from each task's name: about 17 runs a
    # second in all (the benchmark's steady rate), spread as `H` spreads load.
    spec = {"schedule": "H * * * * *", "successfulJobsHistoryLimit": 1, "task": CONTAINER}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: tasks.create(f"many-{i:04}", spec), range(COUNT)))

    until(
        lambda: len({job.labels["taskmaster.dev/task"] for job in recorder.jobs()}) == COUNT,
        timeout=120,
        message=f"a job for each of the {COUNT} tasks",
    )
    recorder.close()

    seen = recorder.jobs()
    assert len({job.name for job in seen}) == len(seen)
    # Lag as the API server recorded it: creationTimestamp has whole seconds, so
    # a difference of d seconds means a lag in [d, d + 1).
    jobs = tasks.batch.list_namespaced_job(tasks.namespace).items
    lags = sorted(
        int(job.metadata.creation_timestamp.timestamp())
        - int(job.metadata.labels["taskmaster.dev/scheduled-time"])
        for job in jobs
    )
    print(f"jobs: {len(lags)}, creation - scheduled (s): {sorted(Counter(lags).items())}")
    assert lags[0] >= 0
    assert lags[int(len(lags) * 0.99)] <= 1, f"lags (s): {Counter(lags)}"
    assert lags[-1] <= 2, f"lags (s): {Counter(lags)}"
