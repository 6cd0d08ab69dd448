"""The workloads: ceilings, minute burst, steady load (with its ramp), cold start, overload.

Each one acts on the cluster, waits on the clock or the watch, and returns
what it measured; the arithmetic is in `bench.stats`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.operator import OperatorProcess

from bench.api import CRONJOBS, EVENTS, JOBS, PODS, TASKS, Api, JobEnds, JobWatch, each
from bench.cluster import Cluster, process_cpu_seconds, process_peak_rss_mb
from bench.stats import (
    Lags,
    burst_lags,
    create_rate,
    duplicates,
    fire_lags,
    on_time_after,
)

logger = logging.getLogger("bench")

NAMESPACE = "bench"
# A run later than this is late (the steady-load target).
ON_TIME_S = 1.0
# What the ceiling client and both schedulers' Jobs look like.
_POD = {
    "metadata": {"annotations": {"sim.taskmaster.dev/duration": "100ms"}},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]},
}


def job_template(*, suspend: bool) -> dict[str, Any]:
    """A Job template; suspended ones get no pods, so a burst measures Job creation alone
    (the Job controller's pod work is the same whichever scheduler created the Job)."""
    return {"spec": {"suspend": suspend, "backoffLimit": 0, "template": _POD}}


# What each scheduler's objects are: (apiVersion, kind).
KINDS = {
    "taskmaster": ("taskmaster.dev/v1", "ScheduledTask"),
    "cronjob": ("batch/v1", "CronJob"),
}


def scheduling_object(
    scheduler: str, name: str, schedule: str, template: dict[str, Any]
) -> dict[str, Any]:
    """A ScheduledTask or a CronJob: the same schedule, Job template and history limits."""
    api_version, kind = KINDS[scheduler]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "schedule": schedule,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": template,
        },
    }


def next_minute(after: float) -> float:
    return (math.floor(after / 60) + 1) * 60


async def sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.time()))


def _ns(path: str) -> str:
    return path.format(ns=NAMESPACE)


def _seconds(value: float) -> float | None:
    """A duration for the JSON: milliseconds are plenty; unknown (NaN, inf) is null."""
    return round(value, 3) if math.isfinite(value) else None


@dataclass
class Bench:
    api: Api
    cluster: Cluster
    watch: JobWatch
    operator: OperatorProcess

    async def create_all(self, path: str, bodies: Sequence[dict[str, Any]]) -> None:
        await each(lambda body: self.api.request("POST", _ns(path), body), bodies)

    async def clean(self) -> None:
        """Delete every task, CronJob, Job, pod and Event of the namespace, and wait until
        they are gone: what one round leaves must not weigh on the next."""
        for path in (TASKS, CRONJOBS):
            await self.api.delete_collection(_ns(path))
        await self.api.delete_collection(_ns(JOBS), propagationPolicy="Background")
        await self.api.delete_collection(_ns(EVENTS))
        deadline = time.monotonic() + 600
        for path in (TASKS, CRONJOBS, JOBS, PODS):
            while await self.api.count(_ns(path)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{_ns(path)} still has objects after the clean-up")
                await asyncio.sleep(0.5)

    async def until_observed(self, period: float = 2.0) -> None:
        """Until every task's status reflects its current spec (observedGeneration): the
        operator has written it, not only decided it, so no write storm overlaps what
        follows. Pages are read in order and a check ends at the first task not written
        yet: waiting on 100,000 tasks does not list them all each time (nor scrapes the
        operator's metrics: rendering them is work for the operator)."""
        while True:
            if await self._all_observed():
                return
            await asyncio.sleep(period)

    async def _all_observed(self) -> bool:
        token = ""
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            page = await self.api.request("GET", _ns(TASKS), params=params)
            for task in page.get("items") or ():
                status = task.get("status") or {}
                if status.get("observedGeneration") != task["metadata"]["generation"]:
                    return False
            token = page.get("metadata", {}).get("continue") or ""
            if not token:
                return True

    async def stop_operator(self) -> None:
        await asyncio.to_thread(self.operator.stop)  # SIGTERM: the Lease is released

    async def start_operator(self) -> float:
        """A new operator process, started as the last one was; the seconds to /readyz
        (with 100,000 tasks, listing them alone takes about a minute on 2 cores)."""
        old = self.operator
        self.operator = OperatorProcess(old.kubeconfig, old.log_path, old.args)
        started = time.time()
        await asyncio.to_thread(self.operator.start, 600)
        return time.time() - started

    @property
    def pid(self) -> int:
        if self.operator.process is None:
            raise RuntimeError("the operator is not running")
        return self.operator.process.pid


# -- 4. ceiling ---------------------------------------------------------------


async def ceiling(bench: Bench, jobs: int, concurrency: int = 64) -> dict[str, Any]:
    """The API server's Job-create throughput for a client that does nothing else."""
    await bench.clean()
    template = job_template(suspend=True)
    bodies = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"ceiling-{i:05}", "namespace": NAMESPACE},
            "spec": template["spec"],
        }
        for i in range(jobs)
    ]
    started = time.monotonic()
    await each(
        lambda body: bench.api.request("POST", _ns(JOBS), body), bodies, concurrency=concurrency
    )
    elapsed = time.monotonic() - started
    await bench.clean()
    logger.info("ceiling: %d Jobs in %.1fs", jobs, elapsed)
    return {"creates_per_s": round(jobs / elapsed, 1), "jobs": jobs, "concurrency": concurrency}


LIFECYCLE_LABEL = "bench.taskmaster.dev/lifecycle"


async def lifecycle_ceiling(
    bench: Bench, seconds: float, concurrencies: Sequence[int] = (16, 64, 256)
) -> dict[str, Any]:
    """Whole runs per second for a client that does nothing else: create a Job (its pod
    runs 100 ms), wait until it finishes, delete it; so many at a time, each level
    for `seconds`. The best level is the ceiling: the physical limit, on this cluster,
    for runs that start, run and go."""
    await bench.clean()
    ends = JobEnds(bench.api, NAMESPACE, LIFECYCLE_LABEL)
    await ends.start()
    levels = []
    try:
        for concurrency in concurrencies:
            rate = await _lifecycles(bench, ends, concurrency, seconds)
            levels.append({"concurrency": concurrency, "runs_per_s": round(rate, 1)})
            logger.info("lifecycle ceiling: %d at a time: %.1f runs/s", concurrency, rate)
            await bench.clean()
    finally:
        await ends.stop()
    best = max(levels, key=lambda level: level["runs_per_s"])
    return {"runs_per_s": best["runs_per_s"], "concurrency": best["concurrency"], "levels": levels}


async def _lifecycles(bench: Bench, ends: JobEnds, concurrency: int, seconds: float) -> float:
    """Runs per second, `concurrency` at a time, for `seconds`."""
    template = job_template(suspend=False)
    stop_at = time.monotonic() + seconds
    serial = itertools.count()
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            name = f"life-{concurrency}-{next(serial):07}"
            end = ends.end_of(name)
            body = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {LIFECYCLE_LABEL: "true"},
                },
                "spec": template["spec"],
            }
            await bench.api.request("POST", _ns(JOBS), body)
            await end
            await bench.api.request(
                "DELETE", f"{_ns(JOBS)}/{name}", params={"propagationPolicy": "Background"}
            )
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


# -- 1. minute burst ----------------------------------------------------------


def _prepare_seconds(n: int) -> float:
    """Time to create n objects and, for tasks, for the operator to write their status."""
    return 5 + n / 120


@dataclass(frozen=True)
class Burst:
    summary: dict[str, Any]
    lags: list[float]


async def burst(bench: Bench, scheduler: str, n: int) -> Burst:
    """N objects with `* * * * *`; per object, its first Job's lag after the minute."""
    await bench.clean()
    # Objects created in the minute before fire first at its end: this minute's
    # end if there is time to create them (and the operator to see them).
    now = time.time()
    minute = next_minute(now)
    if minute - now < _prepare_seconds(n):
        minute += 60
        await sleep_until(minute - 60 + 0.5)
    created_from = time.time()
    template = job_template(suspend=True)
    kind = "taskmaster" if scheduler == "taskmaster" else "cronjob"
    bodies = [scheduling_object(kind, f"burst-{i:05}", "* * * * *", template) for i in range(n)]
    await bench.create_all(TASKS if kind == "taskmaster" else CRONJOBS, bodies)
    if kind == "taskmaster":
        async with asyncio.timeout(minute - time.time()):
            await bench.until_observed()
    if (margin := minute - time.time()) < 2:
        logger.warning("%s n=%d: ready only %.1fs before the minute", scheduler, n, margin)
    audit_start = bench.cluster.audit_offset()
    # Generous: the CronJob controller at its default rate limit makes ~10 Jobs a second.
    deadline = minute + 120 + n * 0.15
    owner = f"{KINDS[kind][1]}/"
    jobs = []
    while time.time() < deadline:
        jobs = [job for job in bench.watch.since(created_from) if job.owner.startswith(owner)]
        if len({job.owner for job in jobs}) >= n:
            break
        await asyncio.sleep(0.2)
    lags = burst_lags(jobs, minute)
    requests = bench.cluster.operator_requests(audit_start, bench.cluster.audit_offset())
    # Objects whose Job never came count as infinitely late.
    stats = Lags.of(lags + [math.inf] * (n - len(lags)))
    summary = {
        "scheduler": scheduler,
        "n": n,
        "lag_p50_s": _seconds(stats.p50),
        "lag_p90_s": _seconds(stats.p90),
        "lag_p99_s": _seconds(stats.p99),
        "lag_max_s": _seconds(stats.max),
        # Until the N-th Job exists, from the scheduled minute.
        "makespan_s": _seconds(stats.max),
        "creates_per_s": _seconds(create_rate(lags)),
        "jobs": len(lags),
    }
    if scheduler == "taskmaster" and lags:
        summary["operator_requests_per_s"] = round(sum(requests.values()) / max(lags), 1)
    logger.info("burst %s n=%d: %s", scheduler, n, summary)
    return Burst(summary, lags)


# -- 2. steady load, and 3. cold start ----------------------------------------


@dataclass(frozen=True)
class Window:
    """What the operator did over a stretch of steady load."""

    fires_per_s: float
    lags: list[float]
    cpu_cores: float
    requests: dict[str, int]

    def summary(self) -> dict[str, Any]:
        stats = Lags.of(self.lags)
        fires = len(self.lags)
        return {
            "fires_per_s": round(self.fires_per_s, 1),
            "lag_p50_s": _seconds(stats.p50),
            "lag_p90_s": _seconds(stats.p90),
            "lag_p99_s": _seconds(stats.p99),
            "lag_max_s": _seconds(stats.max),
            "cpu_cores": round(self.cpu_cores, 3),
            "fires": fires,
            "api_requests_per_fire": round(sum(self.requests.values()) / fires, 2)
            if fires
            else None,
        }


async def measure(bench: Bench, seconds: float) -> Window:
    pid = bench.pid
    start = time.time()
    cpu, audit = process_cpu_seconds(pid), bench.cluster.audit_offset()
    await sleep_until(start + seconds)
    cpu = process_cpu_seconds(pid) - cpu
    requests = bench.cluster.operator_requests(audit, bench.cluster.audit_offset())
    await asyncio.sleep(3)  # the last runs of the window appear
    lags = fire_lags(bench.watch.since(start - 600), start, start + seconds)
    return Window(len(lags) / seconds, lags, cpu / seconds, dict(requests))


async def steady(bench: Bench, tasks: int, schedule: str, seconds: float) -> dict[str, Any]:
    await bench.clean()
    template = job_template(suspend=False)
    bodies = [
        scheduling_object("taskmaster", f"steady-{i:05}", schedule, template) for i in range(tasks)
    ]
    await bench.create_all(TASKS, bodies)
    async with asyncio.timeout(300):
        await bench.until_observed()
    window = await measure(bench, seconds)
    summary = {
        "tasks": tasks,
        "schedule": schedule,
        **window.summary(),
        "peak_rss_mb": round(process_peak_rss_mb(bench.pid), 1),
        "api_requests": window.requests,
        "seconds": seconds,
    }
    logger.info("steady: %s", summary)
    return summary


async def ramp(bench: Bench, schedules: Sequence[str], seconds: float) -> list[dict[str, Any]]:
    """Faster and faster schedules for the same tasks, until runs are late."""
    steps = []
    names = [task["metadata"]["name"] for task in await bench.api.list(_ns(TASKS))]
    for schedule in schedules:
        patch = {"spec": {"schedule": schedule}}
        await each(
            lambda name, patch=patch: bench.api.request(  # type: ignore[misc]
                "PATCH",
                f"{_ns(TASKS)}/{name}",
                patch,
                content_type="application/merge-patch+json",
            ),
            names,
        )
        async with asyncio.timeout(600):
            await bench.until_observed()
        step = {"schedule": schedule, **(await measure(bench, seconds)).summary()}
        logger.info("ramp: %s", step)
        steps.append(step)
        if not on_time(step):
            break
    return steps


def on_time(window: Mapping[str, Any]) -> bool:
    return bool((window["lag_p99_s"] or math.inf) <= ON_TIME_S)


async def cold_start(bench: Bench, seconds: float) -> dict[str, Any]:
    """Replace the operator by a new process, started as it was, and time it to on-time runs."""
    tasks = await bench.api.count(_ns(TASKS))
    await bench.stop_operator()
    started = time.time()
    readyz = await bench.start_operator()
    await sleep_until(started + seconds)
    await asyncio.sleep(3)
    jobs = bench.watch.since(started - 600)
    lags = fire_lags(jobs, started, started + seconds)
    on_time = on_time_after(jobs, started, ON_TIME_S)
    # Every Job of the steady load, the old process's included: a run started
    # twice would have two Jobs (its name is fixed, so the second needs another).
    seen = bench.watch.since(started - 3600)
    stats = Lags.of(lags)
    summary = {
        "tasks": tasks,
        # Until ready and every run since on time.
        "ready_s": round(max(readyz, on_time), 2),
        "readyz_s": round(readyz, 2),
        "duplicates": duplicates(job.labels for job in seen),
        "jobs_checked": len(seen),
        "lag_p99_s": _seconds(stats.p99),
        "fires": len(lags),
    }
    logger.info("cold start: %s", summary)
    return summary
