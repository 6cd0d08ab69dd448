"""Prometheus metrics. Label names are the spec's and status' own words."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskmaster.shell.slots import RunSlots


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


@dataclass(slots=True)
class _Task:
    """One task's series: plain numbers (a client library child per series took
    about 700 bytes, a third of the operator's memory with 10,000 tasks); the
    counters only once the task has run."""

    started: Tally[str] | None = None
    finished: Tally[str] | None = None
    # The gauges; None while this replica does not schedule (or no time is known).
    active: int | None = None
    next_schedule_time: float | None = None
    last_schedule_time: float | None = None

    def count_started(self, trigger: str) -> None:
        if self.started is None:
            self.started = Tally()
        self.started[trigger] += 1

    def count_finished(self, result: str, runs: int) -> None:
        if self.finished is None:
            self.finished = Tally()
        self.finished[result] += runs


class TaskSeries(Collector):
    """Every per-task series, labelled by namespace and task, rendered at scrape time."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], _Task] = {}

    def of(self, namespace: str, task: str) -> _Task:
        return self.tasks.setdefault((namespace, task), _Task())

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "task"]
        started = CounterMetricFamily(
            "taskmaster_runs_started",
            "Jobs created, by trigger (schedule, manual, retry, catch-up).",
            labels=[*labels, "trigger"],
        )
        finished = CounterMetricFamily(
            "taskmaster_runs_finished",
            "Runs recorded in status.history, by result.",
            labels=[*labels, "result"],
        )
        active = GaugeMetricFamily(
            "taskmaster_active_runs", "Runs whose Job is active.", labels=labels
        )
        next_time = GaugeMetricFamily(
            "taskmaster_next_schedule_time_seconds",
            "status.nextRunTime as unix seconds.",
            labels=labels,
        )
        last_time = GaugeMetricFamily(
            "taskmaster_last_schedule_time_seconds",
            "status.lastScheduleTime as unix seconds.",
            labels=labels,
        )
        for key, series in self.tasks.items():
            for trigger, count in (series.started or {}).items():
                started.add_metric([*key, trigger], count)
            for result, count in (series.finished or {}).items():
                finished.add_metric([*key, result], count)
            for family, value in (
                (active, series.active),
                (next_time, series.next_schedule_time),
                (last_time, series.last_schedule_time),
            ):
                if value is not None:
                    family.add_metric(list(key), value)
        yield from (started, finished, active, next_time, last_time)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.tasks = TaskSeries()
        self.registry.register(self.tasks)
        self.fire_lag = Histogram(
            "taskmaster_fire_lag_seconds",
            "Job creation time minus the run's due time (scheduled time plus jitter).",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "taskmaster_reconcile_errors_total",
            "API errors while acting on a task, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "taskmaster_events_dropped_total",
            "Events not posted: over the operator's budget for Events (a fifth of "
            "--kube-api-qps and --kube-api-burst), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.overruns = Counter(
            "taskmaster_overruns_total",
            "A task's parse or decision abandoned for running past its time box, by operation.",
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
        self.kube_api_wait = Histogram(
            "taskmaster_kube_api_wait_seconds",
            "Time each request to the API server waited for the client's rate limit "
            "(--kube-api-qps, --kube-api-burst), by client: the operator's work, or the "
            "leader election's own.",
            ["client"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.leader = Gauge(
            "taskmaster_leader",
            "1 while this replica schedules (holds the Lease, or runs without election).",
            registry=self.registry,
        )

    def count_phases(self, count: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_Phases(count))

    def count_slots(self, slots: RunSlots) -> None:
        in_flight = Gauge(
            "taskmaster_runs_in_flight",
            "Runs whose Job is active or being created, across all tasks: what "
            "--max-active-runs caps.",
            registry=self.registry,
        )
        in_flight.set_function(lambda: slots.in_flight)
        waiting = Gauge(
            "taskmaster_tasks_waiting_for_slot",
            "Tasks with runs waiting for a slot under --max-active-runs: above 0, the cap binds.",
            registry=self.registry,
        )
        waiting.set_function(lambda: slots.waiting)
        if slots.cap is not None:
            cap = Gauge(
                "taskmaster_max_active_runs",
                "The cap on runs in flight (--max-active-runs); absent without one.",
                registry=self.registry,
            )
            cap.set(slots.cap)

    def forget(self, namespace: str, task: str) -> None:
        """Drop the series of a deleted task, its counters included: with tasks
        created and deleted all day, they would otherwise pile up for good."""
        self.tasks.tasks.pop((namespace, task), None)

    def forget_tasks(self) -> None:
        """Drop every task's gauges: a replica that stops scheduling stops
        updating them, and stale copies would double up with the new leader's."""
        for series in self.tasks.tasks.values():
            series.active = series.next_schedule_time = series.last_schedule_time = None
