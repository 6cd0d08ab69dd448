"""The benchmark's report: Markdown tables, the targets checked, plots, README's table."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEDULERS = ("taskmaster", "cronjob", "cronjob-equal-qps")
README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _find(result: Mapping[str, Any], scheduler: str, n: int) -> Mapping[str, Any] | None:
    return next(
        (r for r in result["minute_burst"] if r["scheduler"] == scheduler and r["n"] == n), None
    )


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    met: bool | None  # None: not measured in this run


def _compare(
    value: float | None, limit: float | None, ok: Callable[[float, float], bool]
) -> bool | None:
    if value is None or limit is None:
        return None
    return ok(value, limit)


def targets(result: Mapping[str, Any]) -> list[Target]:
    """The targets of the parts this run measured."""
    found = classic_targets(result) if "minute_burst" in result else []
    return found + (scale_targets(result) if "scale" in result else [])


def classic_targets(result: Mapping[str, Any]) -> list[Target]:
    """Bursts (of 1,000, or the largest below that in a quick run), steady load, cold
    start, ceiling, hostile specs."""
    sizes = sorted({r["n"] for r in result["minute_burst"]})
    burst_n = max((n for n in sizes if n <= 1000), default=1000)
    ours, default, equal = (_find(result, s, burst_n) or {} for s in SCHEDULERS)
    steady, cold = result["steady"], result["cold_start"]
    hostile = result.get("hostile") or {}
    ceiling = result["ceiling"]["creates_per_s"]
    largest = max((r["n"] for r in result["minute_burst"]), default=0)
    rate = (_find(result, "taskmaster", largest) or {}).get("creates_per_s")
    default_makespan = default.get("makespan_s")
    return [
        Target(
            f"burst N={burst_n}: TaskMaster p99 lag ≤ 2 s",
            f"{_s(ours.get('lag_p99_s'))} s",
            _compare(ours.get("lag_p99_s"), 2.0, operator.le),
        ),
        Target(
            f"burst N={burst_n}: makespan ≤ 1/5 of CronJob's (default settings)",
            f"{_s(ours.get('makespan_s'))} s vs {_s(default_makespan)} s",
            _compare(
                ours.get("makespan_s"), default_makespan and default_makespan / 5, operator.le
            ),
        ),
        Target(
            f"burst N={burst_n}: makespan ≤ CronJob's with equal QPS",
            f"{_s(ours.get('makespan_s'))} s vs {_s(equal.get('makespan_s'))} s",
            _compare(ours.get("makespan_s"), equal.get("makespan_s"), operator.le),
        ),
        Target(
            "steady: p99 lag ≤ 1 s",
            f"{_s(steady.get('lag_p99_s'))} s at {steady.get('fires_per_s')} runs/s",
            _compare(steady.get("lag_p99_s"), 1.0, operator.le),
        ),
        Target(
            "steady: operator < 1 CPU core",
            f"{steady.get('cpu_cores')} cores",
            _compare(steady.get("cpu_cores"), 1.0, operator.lt),
        ),
        Target(
            f"steady: peak RSS ≤ 150 MB with {steady.get('tasks')} tasks",
            f"{steady.get('peak_rss_mb')} MB",
            _compare(steady.get("peak_rss_mb"), 150.0, operator.le),
        ),
        _cold_start_target(cold, 15.0),
        Target(
            f"burst N={largest}: create rate ≥ 70% of the ceiling",
            f"{_s(rate)}/s of {ceiling}/s"
            + (f" ({rate / ceiling:.0%})" if rate and ceiling else ""),
            _compare(rate, 0.7 * ceiling, operator.ge),
        ),
        Target(
            f"{hostile.get('specs')} generated hostile specs: slowest reconcile ≤ 1/10 of the"
            " time box",
            f"{_s(hostile.get('slowest_ms'))} ms (p99 {hostile.get('p99_ms')} ms,"
            f" box {hostile.get('time_box_ms')} ms)",
            _compare(
                hostile.get("slowest_ms"),
                hostile.get("time_box_ms") and hostile["time_box_ms"] / 10,
                operator.le,
            ),
        ),
    ]


def _cold_start_target(
    cold: Mapping[str, Any], seconds: float, list_s: float | None = None
) -> Target:
    floor = "" if list_s is None else f" (a bare client's list of the tasks: {list_s} s)"
    return Target(
        f"cold start with {cold.get('tasks')} tasks: ready ≤ {seconds:g} s, no duplicate",
        f"{_s(cold.get('ready_s'))} s, {cold.get('duplicates')} duplicates{floor}",
        None
        if cold.get("ready_s") is None
        else cold["ready_s"] <= seconds and cold.get("duplicates") == 0,
    )


def scale_targets(result: Mapping[str, Any]) -> list[Target]:
    """100,000 tasks, the sustained rate against the lifecycle ceiling, the overload."""
    scale = result["scale"]
    life = scale["lifecycle_ceiling"]["runs_per_s"]
    steady, cold = scale["steady"][-1], scale["cold_start"]
    small = next((row for row in scale["steady"] if row["tasks"] <= 10_000), None) or {}
    peak = max(steady.get("peak_rss_mb") or 0.0, cold.get("peak_rss_mb") or 0.0) or None
    on_time_rate = (result.get("steady") or {}).get("max_fires_per_s_on_time")
    [ours] = [o for o in scale["overload"] if o["scheduler"] == "taskmaster"] or [{}]
    offered = ours.get("overload_runs_offered")
    accounted = (ours.get("overload_runs_started") or 0) + sum(
        (ours.get("overload_runs_recorded_missed") or {}).values()
    )
    cap = scale.get("max_active_runs")
    limits = scale.get("limits_at_scale") or {}
    return [
        Target(
            f"{small.get('tasks')} tasks: peak RSS ≤ 150 MB",
            f"{_s(small.get('peak_rss_mb'))} MB",
            _compare(small.get("peak_rss_mb"), 150.0, operator.le),
        ),
        Target(
            f"{steady['tasks']} tasks: peak RSS ≤ 600 MB",
            f"{_s(peak)} MB",
            _compare(peak, 600.0, operator.le),
        ),
        _cold_start_target(cold, 30.0, limits.get("list_s")),
        Target(
            f"steady with {steady['tasks']} tasks: p99 lag ≤ 1 s",
            f"{_s(steady.get('lag_p99_s'))} s at {steady.get('fires_per_s')} runs/s"
            + (
                f" (lifecycle ceiling with the tasks present: {limits['lifecycle_runs_per_s']})"
                if limits
                else ""
            ),
            _compare(steady.get("lag_p99_s"), 1.0, operator.le),
        ),
        Target(
            "sustained on-time rate ≥ 80% of the lifecycle ceiling",
            f"{on_time_rate} runs/s of {life} runs/s",
            _compare(on_time_rate, 0.8 * life, operator.ge),
        ),
        Target(
            "overload: completed runs/s ≥ 80% of the lifecycle ceiling",
            f"{ours.get('completed_per_s')} runs/s of {life} runs/s",
            _compare(ours.get("completed_per_s"), 0.8 * life, operator.ge),
        ),
        Target(
            "overload: Jobs without a pod bounded by the cap",
            f"at most {ours.get('jobs_without_pod_max')} (cap {cap})",
            _compare(ours.get("jobs_without_pod_max"), cap, operator.le),
        ),
        Target(
            "overload: every run not started recorded Missed with its reason",
            f"{accounted} of {offered} runs started or Missed "
            f"({ours.get('overload_runs_recorded_missed')}), all recorded "
            f"{_s(ours.get('overload_recorded_after_s'))} s after the load",
            None if offered is None else accounted == offered,
        ),
        Target(
            "overload: lag under 1 s within 60 s after the load ends",
            f"on time after {_s(ours.get('recovered_after_s'))} s",
            _compare(ours.get("recovered_after_s"), 60.0, operator.le),
        ),
    ]


def scale_tables(result: Mapping[str, Any]) -> str:
    scale = result["scale"]
    life, steady_rows, cold = scale["lifecycle_ceiling"], scale["steady"], scale["cold_start"]
    levels = ", ".join(
        f"{lv['concurrency']} at a time: {lv['runs_per_s']}" for lv in life["levels"]
    )
    over = _table(
        [
            "scheduler",
            "offered runs/s",
            "completed runs/s",
            "of ceiling",
            "Jobs without pod (max)",
            "Jobs created",
            "lag after p50 (s)",
            "lag after p99 (s)",
            "on time after (s)",
        ],
        "lrrrrrrrr",
        (
            [
                o["scheduler"],
                o["offered_runs_per_s"],
                o["completed_per_s"],
                f"{o['completed_fraction_of_ceiling']:.0%}",
                o["jobs_without_pod_max"],
                o["jobs_created"],
                _s(o.get("lag_after_p50_s")),
                _s(o.get("lag_after_p99_s")),
                _s(o.get("recovered_after_s")),
            ]
            for o in scale["overload"]
        ),
    )
    ours = next((o for o in scale["overload"] if o["scheduler"] == "taskmaster"), {})
    return "\n".join(
        [
            f"Lifecycle ceiling: a minimal client creating Jobs (pods of 100 ms), waiting for "
            f"each to finish and deleting it: {life['runs_per_s']} runs/s ({levels}).",
            "",
            *(
                f"Steady load with {row['tasks']} tasks `{row['schedule']}`: "
                f"{row['fires_per_s']} runs/s, lag p50 {_s(row.get('lag_p50_s'))} s, "
                f"p99 {_s(row.get('lag_p99_s'))} s, max {_s(row.get('lag_max_s'))} s; "
                f"operator {row['cpu_cores']} cores, peak RSS {row['peak_rss_mb']} MB "
                f"(over {row['seconds']:g} s, after {row['create_s']} s creating the tasks "
                f"and {row['setup_s']} s until every status was written); "
                f"{row.get('api_requests_per_fire')} API requests per run.\n"
                for row in steady_rows
            ),
            f"Cold start with {cold['tasks']} tasks: ready after {cold['readyz_s']} s, every "
            f"run on time from {cold['ready_s']} s, {cold['duplicates']} duplicates among "
            f"{cold['jobs_checked']} Jobs; peak RSS {cold['peak_rss_mb']} MB.",
            "",
            *_limits_at_scale(scale.get("limits_at_scale")),
            "Overload: ten times the lifecycle ceiling offered for "
            f"{ours.get('seconds', 0):g} s (every task once a minute; TaskMaster's at hashed "
            "seconds between startAt and endAt, CronJobs on the minute and deleted, their Jobs "
            "kept, before a third), on top of a normal load of half the ceiling that runs "
            "throughout; TaskMaster at its default limits. Completed: Jobs that finished "
            "during the overload. Lag after: the normal load's runs after it ended. "
            f"TaskMaster's overload runs: {ours.get('overload_runs_offered')} offered, "
            f"{ours.get('overload_runs_started')} started, Missed by reason "
            f"{ours.get('overload_runs_recorded_missed')}.",
            "",
            over,
        ]
    )


def _limits_at_scale(limits: Mapping[str, Any] | None) -> list[str]:
    if not limits:
        return []
    return [
        f"The physical limits with the {limits['tasks']} tasks present (operator stopped): "
        f"a bare client lists them, 500 a page as the operator does, in {limits['list_s']} s; "
        f"the lifecycle rate at {limits['concurrency']} at a time is "
        f"{limits['lifecycle_runs_per_s']} runs/s.",
        "",
    ]


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _table(header: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; `align` has one letter per column, l or r."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def burst_table(result: Mapping[str, Any]) -> str:
    bursts = sorted(
        result["minute_burst"], key=lambda r: (r["n"], SCHEDULERS.index(r["scheduler"]))
    )
    return _table(
        ["scheduler", "N", "p50 (s)", "p90 (s)", "p99 (s)", "max (s)", "makespan (s)", "Jobs/s"],
        "lrrrrrrr",
        (
            [
                r["scheduler"],
                r["n"],
                *(_s(r.get(key)) for key in ("lag_p50_s", "lag_p90_s", "lag_p99_s", "lag_max_s")),
                _s(r["makespan_s"]),
                _s(r.get("creates_per_s")),
            ]
            for r in bursts
        ),
    )


def steady_table(result: Mapping[str, Any]) -> str:
    steady = result["steady"]
    windows = [("steady", steady)] + [("ramp", step) for step in result.get("ramp", ())]
    return _table(
        [
            "load",
            "tasks",
            "runs/s",
            "p50 (s)",
            "p99 (s)",
            "max (s)",
            "CPU (cores)",
            "API requests/run",
        ],
        "lrrrrrrr",
        (
            [
                f"{name} `{step['schedule']}`",
                steady["tasks"],
                step["fires_per_s"],
                *(_s(step.get(key)) for key in ("lag_p50_s", "lag_p99_s", "lag_max_s")),
                step["cpu_cores"],
                step.get("api_requests_per_fire"),
            ]
            for name, step in windows
        ),
    )


def targets_table(result: Mapping[str, Any]) -> str:
    return _table(
        ["target", "measured", ""],
        "lll",
        ([t.what, t.measured, _mark(t.met)] for t in targets(result)),
    )


def summary_tables(result: Mapping[str, Any]) -> str:
    """What the README shows: the targets and the burst table."""
    return "\n\n".join([targets_table(result), burst_table(result)])


def markdown(result: Mapping[str, Any], plots: Sequence[str]) -> str:
    machine, cluster = result["machine"], result["cluster"]
    lines = [
        f"# TaskMaster benchmark — {result['date']} ({result['profile']})",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}. "
        f"Kubernetes {result['kubernetes_version']} (etcd, kube-apiserver, "
        f"kube-controller-manager, kube-scheduler as local processes), kwok "
        f"{cluster['kwok']['version']} simulating {cluster['kwok']['nodes']} nodes; "
        f"{cluster['kwok']['pod_duration']}. Everything runs on the same cores.",
        "",
        "## Targets",
        "",
        targets_table(result),
        "",
    ]
    if "minute_burst" in result:
        lines += _classic_sections(result)
    if "scale" in result:
        lines += ["## Scale and overload", "", scale_tables(result), ""]
    lines += [
        "## Plots",
        "",
        *[f"![{Path(plot).stem}]({Path(plot).name})" for plot in plots],
        "",
        "Reproduce: `make bench` (or `make bench-quick`).",
        "",
    ]
    return "\n".join(lines)


def _classic_sections(result: Mapping[str, Any]) -> list[str]:
    cold, ceiling = result["cold_start"], result["ceiling"]
    kcm = result["cluster"]["kube_controller_manager"]
    return [
        "## Minute burst",
        "",
        "N objects with `* * * * *`, created in the minute before; lag is from the "
        "scheduled minute to the Job's ADDED event at a watcher, per object (its first "
        "Job). `cronjob` is kube-controller-manager's CronJob controller at its default "
        f"client rate limit ({kcm['default']['kube_api_qps']} QPS, burst "
        f"{kcm['default']['kube_api_burst']}, per controller); `cronjob-equal-qps` at "
        f"{kcm['equal_qps']['kube_api_qps']} QPS, burst {kcm['equal_qps']['kube_api_burst']}, "
        "where kube-controller-manager's limit does not bind; TaskMaster at its defaults. "
        "Jobs/s: creation rate from the first Job of the burst to the last.",
        "",
        burst_table(result),
        "",
        "## Steady load",
        "",
        "Every task at a second hashed from its name; lag is from each run's scheduled "
        "time to its Job's ADDED event. CPU is the operator process's user + system time "
        "over the window; API requests are the operator's, counted in the API server's "
        f"audit log. Peak RSS {result['steady']['peak_rss_mb']} MB. The ramp shortens the "
        "period until the p99 lag passes 1 s. A step past that point counts only the runs of "
        "its window whose Jobs appeared by 3 s after it, so its runs/s and lags understate "
        "the rate offered and how late the rest ran.",
        "",
        steady_table(result),
        "",
        "## Cold start",
        "",
        f"The operator replaced (SIGTERM, new process) with {cold['tasks']} tasks: "
        f"ready (caches filled) after {cold['readyz_s']} s, every run on time from "
        f"{cold['ready_s']} s; {cold['duplicates']} duplicate runs among "
        f"{cold['jobs_checked']} Jobs.",
        "",
        "## Ceiling",
        "",
        f"A minimal asyncio client creating {ceiling['jobs']} Jobs, {ceiling['concurrency']} "
        f"at a time: {ceiling['creates_per_s']} Jobs/s.",
        "",
    ]


def plot(
    result: Mapping[str, Any], lags: Mapping[tuple[str, int], Sequence[float]], stem: Path
) -> list[Path]:
    """Lag CDFs per scheduler (one panel per N) and makespan against N."""
    import matplotlib  # noqa: PLC0415 (only a full report needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sizes = sorted({n for _, n in lags})
    figure, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for axis, n in zip(axes[0], sizes, strict=True):
        for scheduler in SCHEDULERS:
            values = sorted(lags.get((scheduler, n), ()))
            if values:
                axis.step(
                    values, [(i + 1) / n for i in range(len(values))], where="post", label=scheduler
                )
        axis.set_xscale("log")
        axis.set_xlabel("lag after the scheduled minute (s)")
        axis.set_ylabel("fraction of Jobs created")
        axis.set_title(f"N = {n}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    cdf = stem.with_name(f"{stem.name}-lag-cdf.png")
    figure.tight_layout()
    figure.savefig(cdf, dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for scheduler in SCHEDULERS:
        points = sorted(
            (r["n"], r["makespan_s"])
            for r in result["minute_burst"]
            if r["scheduler"] == scheduler and r["makespan_s"] is not None
        )
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=scheduler)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("N (objects firing in the same minute)")
    axis.set_ylabel("makespan (s)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    makespan = stem.with_name(f"{stem.name}-makespan.png")
    figure.tight_layout()
    figure.savefig(makespan, dpi=100)
    plt.close(figure)
    return [cdf, makespan]


def update_readme(readme: Path, result: Mapping[str, Any], report: str) -> None:
    """Replace the table between README's bench markers by this run's."""
    text = readme.read_text()
    block = (
        f"{README_BEGIN}\n"
        f"Latest full run ({result['date']}, {result['machine']['cores']} cores, "
        f"Kubernetes {result['kubernetes_version']}; report: [{report}]({report})):\n\n"
        f"{summary_tables(result)}\n{README_END}"
    )
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {README_BEGIN} … {README_END} block")
    readme.write_text(pattern.sub(lambda _: block, text))
