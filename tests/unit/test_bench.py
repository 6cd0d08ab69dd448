"""The benchmark's arithmetic and report, on made-up observations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from bench import report
from bench.api import SeenJob
from bench.stats import (
    Lags,
    burst_lags,
    create_rate,
    duplicates,
    fire_lags,
    first_per_owner,
    on_time_after,
    percentile,
)


def job(owner: str, seen_at: float, scheduled: float | None = None, **labels: str) -> SeenJob:
    return SeenJob(
        name=f"{owner}-{seen_at}", owner=owner, seen_at=seen_at, scheduled=scheduled, labels=labels
    )


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
    assert Lags.of([2.0, 1.0, math.inf]).max == math.inf


def test_a_burst_counts_each_objects_first_job_from_the_minute() -> None:
    minute = 600.0
    jobs = [
        job("CronJob/a", 601.5),
        job("CronJob/b", 603.0),
        # b's next minute, created while the controller was still behind: not counted.
        job("CronJob/b", 661.0),
        job("CronJob/c", 602.0),
    ]
    assert set(first_per_owner(jobs)) == {"CronJob/a", "CronJob/b", "CronJob/c"}
    assert burst_lags(jobs, minute) == [1.5, 2.0, 3.0]
    assert create_rate([1.5, 2.0, 3.0]) == pytest.approx(2 / 1.5)
    assert math.isnan(create_rate([1.0]))


def test_fire_lags_take_the_runs_scheduled_in_the_window() -> None:
    jobs = [
        job("t/a", 100.2, scheduled=100),
        job("t/b", 109.9, scheduled=109),
        job("t/c", 111.0, scheduled=110),  # after the window
        job("t/d", 99.5, scheduled=99),  # before it
        job("CronJob/x", 105.0),  # no scheduled time
    ]
    assert fire_lags(jobs, 100, 110) == pytest.approx([0.2, 0.9])


def test_on_time_is_after_the_last_late_run_since_the_start() -> None:
    start = 1000.0
    jobs = [
        job("t/a", 1004.0, scheduled=1001),  # 3 s late, appeared 4 s after the start
        job("t/b", 1006.2, scheduled=1006),
        job("t/c", 1003.0, scheduled=990),  # scheduled before the start: catch-up
    ]
    assert on_time_after(jobs, start, limit=1.0) == 4.0
    assert on_time_after(jobs[1:], start, limit=1.0) == 0.0


def test_duplicates_are_second_jobs_for_one_run_of_one_task() -> None:
    run = {"taskmaster.dev/task": "a", "taskmaster.dev/scheduled-time": "60"}
    retry = {**run, "taskmaster.dev/attempt": "2"}
    assert duplicates([run, retry, {"app": "other"}, {"app": "other"}]) == 0
    assert duplicates([run, dict(run), retry]) == 1


def result(**overrides: Any) -> dict[str, Any]:
    burst = [
        {"scheduler": s, "n": n, "lag_p50_s": 0.5, "lag_p90_s": 0.8, "lag_p99_s": p99,
         "lag_max_s": makespan, "makespan_s": makespan, "creates_per_s": rate}
        for s, n, p99, makespan, rate in [
            ("taskmaster", 1000, 1.5, 2.0, 600.0),
            ("cronjob", 1000, 90.0, 100.0, 10.0),
            ("cronjob-equal-qps", 1000, 3.0, 4.0, 300.0),
        ]
    ]  # fmt: skip
    steady = {
        "tasks": 10000, "schedule": "H H/10 * * * *", "fires_per_s": 16.7, "lag_p50_s": 0.1,
        "lag_p99_s": 0.4, "lag_max_s": 0.9, "cpu_cores": 0.3, "peak_rss_mb": 140.0,
        "api_requests_per_fire": 5.0, "max_fires_per_s_on_time": 33.0,
    }  # fmt: skip
    value: dict[str, Any] = {
        "date": "2026-11-23",
        "profile": "full",
        "machine": {"cores": 2, "cpu": "x", "memory_gib": 24, "kernel": "6", "python": "3.11"},
        "kubernetes_version": "v1.36.1",
        "cluster": {
            "kwok": {"version": "v0.8.0", "nodes": 2, "pod_duration": "100ms"},
            "kube_controller_manager": {
                "default": {"kube_api_qps": 20, "kube_api_burst": 30},
                "equal_qps": {"kube_api_qps": 2000, "kube_api_burst": 4000},
            },
        },
        "minute_burst": burst,
        "steady": steady,
        "ramp": [{**steady, "schedule": "H * * * * *", "fires_per_s": 166.7, "lag_p99_s": 1.4}],
        "cold_start": {
            "tasks": 10000,
            "ready_s": 6.0,
            "readyz_s": 4.0,
            "duplicates": 0,
            "jobs_checked": 12000,
        },
        "ceiling": {"creates_per_s": 800.0, "jobs": 3000, "concurrency": 64},
        "hostile": {"specs": 20000, "slowest_ms": 9.5, "p99_ms": 0.7, "time_box_ms": 2000.0},
    }
    value.update(overrides)
    return value


def test_every_target_is_checked_against_what_was_measured() -> None:
    checks = {target.what: target.met for target in report.targets(result())}
    assert list(checks.values()) == [True, True, True, True, True, True, True, True, True]

    slow = result(cold_start={**result()["cold_start"], "ready_s": 16.0})
    assert [t.met for t in report.targets(slow)][6] is False
    starved = result(ceiling={"creates_per_s": 1000.0, "jobs": 1, "concurrency": 1})
    assert [t.met for t in report.targets(starved)][7] is False
    costly = result(hostile={**result()["hostile"], "slowest_ms": 250.0})
    assert [t.met for t in report.targets(costly)][8] is False


def scale(**overrides: Any) -> dict[str, Any]:
    """The scale part of a run, as `bench.__main__._scale` returns it."""
    overload = {
        "scheduler": "taskmaster", "offered_runs_per_s": 375.0, "seconds": 120,
        "completed_per_s": 33.0, "completed_fraction_of_ceiling": 0.88,
        "jobs_without_pod_max": 700, "jobs_created": 5000, "lag_after_p50_s": 0.1,
        "lag_after_p99_s": 0.6, "recovered_after_s": 20.0, "overload_runs_offered": 45000,
        "overload_runs_started": 4000,
        "overload_runs_recorded_missed": {"MaxActiveRuns": 41000},
    }  # fmt: skip
    value: dict[str, Any] = {
        "max_active_runs": 1000,
        "lifecycle_ceiling": {
            "runs_per_s": 37.5,
            "concurrency": 64,
            "levels": [{"concurrency": 64, "runs_per_s": 37.5}],
        },
        "steady": [
            {
                "tasks": 10000,
                "schedule": "H H * * * *",
                "fires_per_s": 2.8,
                "lag_p50_s": 0.1,
                "lag_p99_s": 0.5,
                "lag_max_s": 0.9,
                "cpu_cores": 0.1,
                "peak_rss_mb": 140.0,
                "api_requests_per_fire": 5.0,
                "seconds": 120,
                "create_s": 20.0,
                "setup_s": 30.0,
            },
            {
                "tasks": 100000,
                "schedule": "H H * * * *",
                "fires_per_s": 27.8,
                "lag_p50_s": 0.1,
                "lag_p99_s": 0.5,
                "lag_max_s": 0.9,
                "cpu_cores": 0.4,
                "peak_rss_mb": 550.0,
                "api_requests_per_fire": 5.0,
                "seconds": 300,
                "create_s": 200.0,
                "setup_s": 300.0,
            },
        ],
        "cold_start": {
            "tasks": 100000,
            "ready_s": 20.0,
            "readyz_s": 15.0,
            "duplicates": 0,
            "jobs_checked": 9000,
            "peak_rss_mb": 560.0,
        },
        "limits_at_scale": {
            "tasks": 100000,
            "list_s": 12.5,
            "lifecycle_runs_per_s": 30.1,
            "concurrency": 64,
        },
        "overload": [overload, {**overload, "scheduler": "cronjob", "completed_per_s": 10.0}],
    }
    value.update(overrides)
    return value


def test_the_scale_targets_are_checked_against_the_lifecycle_ceiling() -> None:
    both = result(scale=scale())
    checks = {t.what: t.met for t in report.targets(both)}
    assert list(checks.values())[9:] == [True] * 9

    alone = {k: v for k, v in both.items() if k not in ("minute_burst", "steady", "ramp")}
    # Without the classic part the sustained on-time rate is not measured.
    assert [t.met for t in report.targets(alone)] == [True] * 4 + [None] + [True] * 4
    [ours, theirs] = scale()["overload"]
    slow = scale(overload=[{**ours, "completed_per_s": 20.0}, theirs])
    assert [t.met for t in report.targets(result(scale=slow))][14] is False
    lost = scale(overload=[{**ours, "overload_runs_started": 3999}, theirs])
    assert [t.met for t in report.targets(result(scale=lost))][16] is False

    text = report.markdown(alone, [])
    assert "Lifecycle ceiling: a minimal client" in text
    assert "lists them, 500 a page as the operator does, in 12.5 s" in text
    assert "20.00 s, 0 duplicates (a bare client's list of the tasks: 12.5 s)" in text
    assert "(lifecycle ceiling with the tasks present: 30.1)" in text
    assert "| cronjob | 375.0 | 10.0 | 88% | 700 | 5000 | 0.10 | 0.60 | 20.00 |" in text
    assert "## Minute burst" not in text


def test_a_target_without_a_measurement_is_not_called_met() -> None:
    missing = result(minute_burst=[])
    assert [t.met for t in report.targets(missing)][:3] == [None, None, None]


def test_the_report_has_every_table_and_the_plots(tmp_path: Path) -> None:
    text = report.markdown(result(), ["2026-11-23-lag-cdf.png"])
    assert "| taskmaster | 1000 | 0.50 | 0.80 | 1.50 | 2.00 | 2.00 | 600.00 |" in text
    assert "| ramp `H * * * * *` | 10000 | 166.7 |" in text
    assert "![2026-11-23-lag-cdf](2026-11-23-lag-cdf.png)" in text

    plots = report.plot(
        result(), {("taskmaster", 1000): [0.1, 0.5, 2.0], ("cronjob", 1000): [1.0, 50.0]},
        tmp_path / "run",
    )  # fmt: skip
    assert [p.name for p in plots] == ["run-lag-cdf.png", "run-makespan.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_BEGIN}\nstale table\n{report.README_END}\nrest\n")
    report.update_readme(readme, result(), "bench/results/2026-11-23.md")
    text = readme.read_text()
    assert "stale table" not in text
    assert text.startswith("intro\n")
    assert text.endswith("rest\n")
    assert "| taskmaster | 1000 |" in text

    readme.write_text("no markers")
    with pytest.raises(ValueError, match="bench:begin"):
        report.update_readme(readme, result(), "x")
