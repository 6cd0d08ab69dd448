"""Prometheus metrics. Label names are the spec's and status' own words."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _Phases(Collector):
    """`taskmaster_tasks{phase}`, counted from memory at scrape time."""

    def __init__(self, count: Callable[[], Mapping[str, int]]) -> None:
        self.count = count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "taskmaster_tasks",
            "ScheduledTasks known to the operator, by status.phase.",
            labels=["phase"],
        )
        for phase, count in sorted(self.count().items()):
            family.add_metric([phase], count)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs_started = Counter(
            "taskmaster_runs_started_total",
            "Jobs created, by trigger (schedule, manual, retry, catch-up).",
            ["namespace", "task", "trigger"],
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "taskmaster_runs_finished_total",
            "Runs recorded in status.history, by result.",
            ["namespace", "task", "result"],
            registry=self.registry,
        )
        self.fire_lag = Histogram(
            "taskmaster_fire_lag_seconds",
            "Job creation time minus the run's due time (scheduled time plus jitter).",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.active_runs = Gauge(
            "taskmaster_active_runs",
            "Runs whose Job is active.",
            ["namespace", "task"],
            registry=self.registry,
        )
        self.next_schedule_time = Gauge(
            "taskmaster_next_schedule_time_seconds",
            "status.nextRunTime as unix seconds.",
            ["namespace", "task"],
            registry=self.registry,
        )
        self.last_schedule_time = Gauge(
            "taskmaster_last_schedule_time_seconds",
            "status.lastScheduleTime as unix seconds.",
            ["namespace", "task"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "taskmaster_reconcile_errors_total",
            "API errors while acting on a task, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.admission_reviews = Counter(
            "taskmaster_admission_reviews_total",
            "ScheduledTask writes reviewed by the webhook, by verdict: allowed, denied, or "
            "unchecked (admitted because the review itself failed).",
            ["verdict"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "taskmaster_leader",
            "1 while this replica schedules (holds the Lease, or runs without election).",
            registry=self.registry,
        )

    def count_phases(self, count: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_Phases(count))

    def _per_task(self) -> tuple[Gauge, ...]:
        return (self.active_runs, self.next_schedule_time, self.last_schedule_time)

    def forget(self, namespace: str, task: str) -> None:
        """Drop the series of a deleted task."""
        for metric in self._per_task():
            with contextlib.suppress(KeyError):
                metric.remove(namespace, task)

    def forget_tasks(self) -> None:
        """Drop every task's series: a replica that stops scheduling stops
        updating them, and stale copies would double up with the new leader's."""
        for metric in self._per_task():
            metric.clear()
