"""Scale and overload: steady load at 10,000 and 100,000 tasks, and an offered load
ten times what the cluster can run, for TaskMaster and the CronJob controller.

The physical limit is `lifecycle_ceiling` (workloads.py), measured in the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.api import CRONJOBS, TASKS, JobEnds, JobStates, each
from bench.cluster import process_peak_rss_mb
from bench.stats import Lags, fire_lags, on_time_after
from bench.workloads import (
    LIFECYCLE_LABEL,
    NAMESPACE,
    ON_TIME_S,
    Bench,
    _lifecycles,
    _ns,
    _seconds,
    job_template,
    measure,
    scheduling_object,
    sleep_until,
)
from taskmaster.core.spec import parse_task
from taskmaster.core.times import rfc3339

logger = logging.getLogger("bench")


async def until_reconciled(bench: Bench, within: float) -> None:
    """Until the operator has written every task's status, for at most `within` seconds."""
    async with asyncio.timeout(within):
        await bench.until_observed(period=5.0)


async def steady_sizes(
    bench: Bench, sizes: Sequence[int], schedule: str, windows: Sequence[float]
) -> list[dict[str, Any]]:
    """Steady load at each size in turn (tasks added to reach it), each measured over
    its window: lag, CPU, peak RSS (the process's peak so far: sizes only grow)."""
    await bench.clean()
    template = job_template(suspend=False)
    results = []
    made = 0
    for size, seconds in zip(sizes, windows, strict=True):
        started = time.monotonic()
        bodies = [
            scheduling_object("taskmaster", f"steady-{i:06}", schedule, template)
            for i in range(made, size)
        ]
        await bench.create_all(TASKS, bodies)
        made = size
        created_s = time.monotonic() - started
        await until_reconciled(bench, within=1800)
        window = await measure(bench, seconds)
        summary = {
            "tasks": size,
            "schedule": schedule,
            **window.summary(),
            "peak_rss_mb": round(process_peak_rss_mb(bench.pid), 1),
            "setup_s": round(time.monotonic() - started - seconds, 1),
            "create_s": round(created_s, 1),
            "seconds": seconds,
        }
        logger.info("steady at %d: %s", size, summary)
        results.append(summary)
    return results


async def limits_at_scale(bench: Bench, concurrency: int, seconds: float) -> dict[str, Any]:
    """The physical limits with every task of the steady load present and the operator
    stopped: a bare client's paged list of the tasks (the floor under a cold start's
    first list) and the lifecycle rate at the ceiling's best concurrency (the
    cluster's own limit for whole runs with that many objects in its stores)."""
    await bench.stop_operator()
    try:
        started = time.monotonic()
        tasks = len(await bench.api.list(_ns(TASKS)))
        list_s = time.monotonic() - started
        ends = JobEnds(bench.api, NAMESPACE, LIFECYCLE_LABEL)
        await ends.start()
        try:
            rate = await _lifecycles(bench, ends, concurrency, seconds)
        finally:
            await ends.stop()
    finally:
        await bench.start_operator()
    summary = {
        "tasks": tasks,
        "list_s": round(list_s, 1),
        "lifecycle_runs_per_s": round(rate, 1),
        "concurrency": concurrency,
    }
    logger.info("limits at scale: %s", summary)
    return summary


async def overload(
    bench: Bench,
    scheduler: str,
    ceiling: float,
    *,
    factor: float = 10.0,
    normal_share: float = 0.5,
    seconds: float = 120,
    after: float = 120,
) -> dict[str, Any]:
    """`factor` times the lifecycle ceiling offered for `seconds`, on top of a normal
    load (`normal_share` of the ceiling) that runs throughout.

    Every task runs once a minute: TaskMaster's at a second hashed from the name (the
    overload tasks between startAt and endAt); CronJobs on the minute (their finest
    grain), the overload ones deleted (their Jobs orphaned, kept) before a third.
    """
    await bench.clean()
    normal = max(1, round(normal_share * ceiling * 60))
    extra = max(1, round((factor - normal_share) * ceiling * 60))
    # Setup: creating the objects (and the operator writing their first status).
    start = math.ceil((time.time() + 45 + (normal + extra) / 150) / 60) * 60
    end = start + seconds
    template = job_template(suspend=False)
    if scheduler == "taskmaster":
        window = {
            key: rfc3339(datetime.fromtimestamp(at, UTC))
            for key, at in (("startAt", start), ("endAt", end - 1))
        }
        kind, path, schedule = "taskmaster", TASKS, "H * * * * *"
    else:
        window, kind, path, schedule = {}, "cronjob", CRONJOBS, "* * * * *"
    bodies = [scheduling_object(kind, f"normal-{i:05}", schedule, template) for i in range(normal)]
    for i in range(extra):
        body = scheduling_object(kind, f"over-{i:05}", schedule, template)
        body["spec"].update(window)
        bodies.append(body)
    await bench.create_all(path, bodies)
    if scheduler == "taskmaster":
        await until_reconciled(bench, within=max(60.0, start - time.time()))
    if (margin := start - time.time()) < 5:
        logger.warning("overload %s: ready only %.1fs before it starts", scheduler, margin)
    states = JobStates(bench.api, NAMESPACE)
    await states.start()
    worst = 0
    cpu = None
    # TaskMaster's overload tasks end by themselves; the CronJobs are deleted
    # shortly before the end (21,000 deletions take a while).
    deleting: asyncio.Task[None] | None = None
    try:
        await sleep_until(start)
        window_result = asyncio.create_task(measure(bench, seconds))
        while time.time() < end + after:
            worst = max(worst, states.waiting)
            if scheduler != "taskmaster" and deleting is None and time.time() >= end - 10:
                names = [f"over-{i:05}" for i in range(extra)]
                deleting = asyncio.create_task(_delete_orphaning(bench, names))
            await asyncio.sleep(1)
        cpu = (await window_result).cpu_cores if scheduler == "taskmaster" else None
        if deleting is not None:
            await deleting
    finally:
        await states.stop()
    completed = [t for t in states.finished if start <= t < end]
    jobs = bench.watch.since(start - 120)
    normal_jobs = [job for job in jobs if "/normal-" in job.owner]
    after_lags = Lags.of(fire_lags(normal_jobs, end, end + after))
    summary: dict[str, Any] = {
        "scheduler": scheduler,
        "offered_runs_per_s": round((normal + extra) / 60, 1),
        "seconds": seconds,
        "completed_per_s": round(len(completed) / seconds, 1),
        "completed_fraction_of_ceiling": round(len(completed) / seconds / ceiling, 2),
        "jobs_without_pod_max": worst,
        "lag_after_p50_s": _seconds(after_lags.p50),
        "lag_after_p99_s": _seconds(after_lags.p99),
        "recovered_after_s": round(on_time_after(normal_jobs, end, ON_TIME_S), 1),
        "jobs_created": len([job for job in jobs if job.seen_at >= start]),
    }
    if scheduler == "taskmaster":
        summary["operator_cpu_cores"] = cpu
        summary.update(await _accounting(bench, start, end))
    logger.info("overload %s: %s", scheduler, summary)
    return summary


async def _delete_orphaning(bench: Bench, names: list[str]) -> None:
    """Delete CronJobs and keep their Jobs (counted as the load they made)."""
    await each(
        lambda name: bench.api.request(
            "DELETE",
            f"{_ns(CRONJOBS)}/{name}",
            params={"propagationPolicy": "Orphan"},
            expected=(200, 202, 404),
        ),
        names,
        concurrency=64,
    )


async def _accounting(bench: Bench, start: float, end: float) -> dict[str, Any]:
    """The overload tasks' runs: offered (their schedules' times in the window), started
    (their Jobs), and Missed by reason (their statuses), read until every run offered
    is accounted for (the last to wait is past its starting deadline, 60 s, and the
    operator writes such records within a budget, after the rest) or for 10 minutes."""
    started = {
        (job.owner, job.scheduled)
        for job in bench.watch.since(start - 120)
        if "/over-" in job.owner and job.scheduled is not None and start <= job.scheduled < end
    }
    counts: dict[str, Any] = {}
    while True:
        offered, missed = await _offered_and_missed(bench, start, end)
        counts = {
            "overload_runs_offered": offered,
            "overload_runs_started": len(started),
            "overload_runs_recorded_missed": dict(missed),
            "overload_recorded_after_s": round(time.time() - end, 1),
        }
        if len(started) + sum(missed.values()) >= offered or time.time() > end + 600:
            return counts
        await asyncio.sleep(30)


async def _offered_and_missed(bench: Bench, start: float, end: float) -> tuple[int, Counter[str]]:
    tasks = [t for t in await bench.api.list(_ns(TASKS)) if t["metadata"]["name"][:5] == "over-"]
    offered, missed = 0, Counter[str]()
    after = datetime.fromtimestamp(start, UTC) - timedelta(microseconds=1)
    for task in tasks:
        timeline = parse_task(task, now=after).timeline
        offered += sum(
            1 for _ in itertools.takewhile(lambda t: t.timestamp() < end, timeline.times(after))
        )
        for entry in (task.get("status") or {}).get("history") or ():
            scheduled = datetime.fromisoformat(entry["scheduledTime"]).timestamp()
            if start <= scheduled < end and entry["result"] == "Missed":
                missed[entry.get("reason") or ""] += entry.get("runs", 1)
    return offered, missed
