"""`python -m bench [--quick] [--only PART]`: every workload on a fresh local cluster,
then the report.

Order: ceiling; minute bursts (TaskMaster and the CronJob controller in
alternate minutes, kube-controller-manager at its defaults); the same bursts
for the CronJob controller with its rate limit raised; steady load; cold
start; the ramp (the part `classic`). Then, at the raised rate limit (the part
`scale`): the lifecycle ceiling; steady load and a cold start at 100,000
tasks; the overload, TaskMaster then the CronJob controller. The cluster is
the benchmark's own and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.support.operator import OperatorProcess

from bench import report
from bench.api import Api, JobWatch
from bench.cluster import (
    CRONJOB_WORKERS,
    DEFAULT_QPS,
    ROOT,
    STATE,
    Cluster,
    machine,
    process_peak_rss_mb,
)
from bench.hostile import slowest_reconcile
from bench.scale import limits_at_scale, overload, steady_sizes
from bench.workloads import (
    NAMESPACE,
    Bench,
    burst,
    ceiling,
    cold_start,
    lifecycle_ceiling,
    on_time,
    ramp,
    steady,
)
from taskmaster.shell.operator import DEFAULT_MAX_ACTIVE_RUNS

logger = logging.getLogger("bench")
RESULTS = ROOT / "bench" / "results"
# kube-controller-manager's rate limit for `cronjob-equal-qps`: far above what
# either scheduler reaches (TaskMaster's own default, 500 QPS with a burst of
# 2,500, does not bind in these bursts either).
EQUAL_QPS = {"kube_api_qps": 2000, "kube_api_burst": 4000}


@dataclass(frozen=True)
class Profile:
    name: str
    ceiling_jobs: int
    burst_sizes: tuple[int, ...]
    steady_tasks: int
    # Every task at a second hashed from its name, each period shorter.
    steady_schedule: str
    steady_seconds: float
    cold_seconds: float
    ramp_schedules: tuple[str, ...]
    ramp_seconds: float
    # Generated hostile specs timed through the pure pipeline.
    hostile_specs: int = 20_000
    # The scale part: seconds per concurrency level of the lifecycle ceiling;
    # steady load at this many tasks (hourly, at a hashed minute and second);
    # the overload's seconds, and the seconds measured after it.
    lifecycle_seconds: float = 20
    scale_tasks: tuple[int, ...] = (10_000, 100_000)
    scale_schedule: str = "H H * * * *"
    scale_seconds: tuple[float, ...] = (120, 300)
    overload_seconds: float = 120
    overload_after: float = 120


FULL = Profile(
    name="full",
    ceiling_jobs=3000,
    burst_sizes=(100, 1000, 5000),
    steady_tasks=10_000,
    steady_schedule="H H/10 * * * *",
    steady_seconds=600,
    cold_seconds=60,
    ramp_schedules=(
        "H H/5 * * * *",
        "H H/2 * * * *",
        "H * * * * *",
        "H/30 * * * * *",
        "H/20 * * * * *",
        "H/15 * * * * *",
        "H/10 * * * * *",
    ),
    ramp_seconds=60,
)
# Under five minutes: the same shape, smaller numbers.
QUICK = Profile(
    name="quick",
    ceiling_jobs=500,
    burst_sizes=(100,),
    steady_tasks=500,
    steady_schedule="H/30 * * * * *",
    steady_seconds=20,
    cold_seconds=10,
    ramp_schedules=("H/10 * * * * *",),
    ramp_seconds=10,
    hostile_specs=2_000,
    lifecycle_seconds=5,
    scale_tasks=(1_000, 2_000),
    scale_schedule="H H/5 * * * *",
    scale_seconds=(10, 20),
    overload_seconds=30,
    overload_after=30,
)
PARTS = ("classic", "scale")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, under 5 minutes")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster running")
    parser.add_argument(
        "--no-readme", action="store_true", help="do not update README's table (full runs)"
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable; default: all); results in <date>-<part>.*",
    )
    return parser.parse_args(argv)


async def run(
    profile: Profile, cluster: Cluster, parts: Sequence[str] = PARTS
) -> tuple[dict[str, Any], dict[Any, Any]]:
    api = Api(cluster.kubeconfig)
    try:
        cluster.kubectl("apply", "-f", ROOT / "crds")
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE)
        version = await api.request("GET", "/version")
        operator = OperatorProcess(
            cluster.operator_kubeconfig(), STATE / "operator.log", ["--namespace", NAMESPACE]
        )
        await asyncio.to_thread(operator.start)
        watch = JobWatch(api, NAMESPACE)
        await watch.start()
        bench = Bench(api, cluster, watch, operator)
        result: dict[str, Any] = {}
        lags: dict[Any, Any] = {}
        if "classic" in parts:
            lags = await _classic(bench, profile, result)
        else:
            await asyncio.to_thread(cluster.restart_controller_manager, EQUAL_QPS)
        if "scale" in parts:
            result["scale"] = await _scale(bench, profile)
        await asyncio.to_thread(bench.operator.stop)
        await watch.stop()
        result["kubernetes_version"] = version.get("gitVersion")
        result["cluster"] = {
            "kwok": cluster.describe(),
            "kube_controller_manager": {
                "default": DEFAULT_QPS,
                "equal_qps": EQUAL_QPS,
                "concurrent_cron_job_syncs": CRONJOB_WORKERS,
            },
        }
        return result, lags
    finally:
        await api.close()


async def _classic(bench: Bench, profile: Profile, result: dict[str, Any]) -> dict[Any, Any]:
    """Ceiling, bursts, steady load, cold start, ramp; leaves kube-controller-manager at
    the raised rate limit."""
    result["ceiling"] = await ceiling(bench, profile.ceiling_jobs)
    result["hostile"] = await asyncio.to_thread(slowest_reconcile, profile.hostile_specs)

    bursts, lags = [], {}
    for n in profile.burst_sizes:
        for scheduler in ("taskmaster", "cronjob"):
            done = await burst(bench, scheduler, n)
            bursts.append(done.summary)
            lags[scheduler, n] = done.lags
    await bench.clean()
    await asyncio.to_thread(bench.cluster.restart_controller_manager, EQUAL_QPS)
    for n in profile.burst_sizes:
        done = await burst(bench, "cronjob-equal-qps", n)
        bursts.append(done.summary)
        lags["cronjob-equal-qps", n] = done.lags
    result["minute_burst"] = bursts

    # The Job controller keeps up with thousands of pods only at the raised rate limit.
    result["steady"] = await steady(
        bench, profile.steady_tasks, profile.steady_schedule, profile.steady_seconds
    )
    result["cold_start"] = await cold_start(bench, profile.cold_seconds)
    result["ramp"] = await ramp(bench, profile.ramp_schedules, profile.ramp_seconds)
    result["steady"]["max_fires_per_s_on_time"] = max(
        [
            result["steady"]["fires_per_s"],
            *(s["fires_per_s"] for s in result["ramp"] if on_time(s)),
        ]
    )
    return lags


async def _scale(bench: Bench, profile: Profile) -> dict[str, Any]:
    """The lifecycle ceiling, steady load and cold start at scale, the overload."""
    lifecycle = await lifecycle_ceiling(bench, profile.lifecycle_seconds)
    steady_rows = await steady_sizes(
        bench, profile.scale_tasks, profile.scale_schedule, profile.scale_seconds
    )
    cold = await cold_start(bench, profile.cold_seconds)
    cold["peak_rss_mb"] = round(process_peak_rss_mb(bench.pid), 1)
    limits = await limits_at_scale(bench, lifecycle["concurrency"], profile.lifecycle_seconds)
    rate = lifecycle["runs_per_s"]
    overloads = [
        await overload(
            bench,
            scheduler,
            rate,
            seconds=profile.overload_seconds,
            after=profile.overload_after,
        )
        for scheduler in ("taskmaster", "cronjob")
    ]
    return {
        "max_active_runs": DEFAULT_MAX_ACTIVE_RUNS,
        "lifecycle_ceiling": lifecycle,
        "steady": steady_rows,
        "cold_start": cold,
        "limits_at_scale": limits,
        "overload": overloads,
    }


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    profile = QUICK if options.quick else FULL
    cluster = Cluster()
    started = time.monotonic()
    cluster.up()
    parts = tuple(options.only or PARTS)
    try:
        result, lags = asyncio.run(run(profile, cluster, parts))
    finally:
        if not options.keep_cluster:
            cluster.down()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    result = {
        "date": date,
        "profile": profile.name,
        "machine": machine(),
        **result,
        "duration_s": round(time.monotonic() - started),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / (date if profile is FULL else "quick")
    if parts != PARTS:
        stem = stem.with_name(f"{stem.name}-{'-'.join(parts)}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plots = report.plot(result, lags, stem) if "classic" in parts else []
    stem.with_suffix(".md").write_text(report.markdown(result, [p.name for p in plots]))
    if profile is FULL and parts == PARTS and not options.no_readme:
        report.update_readme(ROOT / "README.md", result, f"bench/results/{date}.md")
    print(report.targets_table(result))
    logger.info("results in %s.{json,md}", stem)


if __name__ == "__main__":
    main()
