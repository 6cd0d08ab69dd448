"""What the plugin prints, computed from API objects as plain data: no I/O here.

Tables are laid out as kubectl lays out its own (columns three spaces apart,
`<none>` for an absent value); ages read as kubectl's (`45s`, `5m3s`, `3h`, `2d4h`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from taskmaster.core.names import ANNOTATION_RUN_NOW, GROUP, PLURAL
from taskmaster.core.preview import Upcoming, describe_schedule
from taskmaster.core.spec import InvalidSpec, TaskSpec, parse_task
from taskmaster.core.status import (
    HistoryEntry,
    Result,
    read_history,
    says_stopped,
)
from taskmaster.core.times import parse_time, rfc3339

NONE = "<none>"
RESOURCE = f"{PLURAL}.{GROUP}"
_MESSAGE_WIDTH = 80


class PluginError(Exception):
    """Something the user is told on stderr, ending the command with exit code 1."""


def human_duration(delta: timedelta) -> str:  # noqa: PLR0911 (one return per unit, as kubectl)
    """A duration the way kubectl prints ages (`duration.HumanDuration`)."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(then: datetime | None, now: datetime) -> str:
    """How long ago `then` was: `5m3s`, or `<none>`."""
    return NONE if then is None else human_duration(now - then)


def until_next(then: datetime | None, now: datetime) -> str:
    """When a coming time is: `in 5m3s`, `now` when due, `<none>` when there is none."""
    if then is None:
        return NONE
    ahead = then - now
    if ahead < timedelta(seconds=1):
        # An overdue time is one the operator has not acted on (yet).
        return "now" if ahead > -timedelta(seconds=2) else f"overdue {human_duration(-ahead)}"
    return f"in {human_duration(ahead)}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns three spaces apart, as `kubectl get` prints them; no trailing blanks."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def one_line(text: str, width: int = _MESSAGE_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def schedule_of(spec: Mapping[str, Any]) -> str:
    """The task's schedule in a few words: `*/5 * * * * (Europe/Paris)`, `every 30s`, `at …`."""
    if spec.get("schedule"):
        zone = spec.get("timeZone")
        return f"{spec['schedule']} ({zone})" if zone and zone != "UTC" else str(spec["schedule"])
    if isinstance(spec.get("schedules"), list):
        zone = spec.get("timeZone")
        return " | ".join(
            schedule_of({"timeZone": zone, **entry}) if isinstance(entry, Mapping) else "?"
            for entry in spec["schedules"]
        )
    if spec.get("every"):
        return f"every {spec['every']}"
    if spec.get("runAt"):
        return f"at {spec['runAt']}"
    return NONE


def spec_of(task: Mapping[str, Any], now: datetime) -> TaskSpec | None:
    """The task's spec as the operator reads it; None when it is invalid."""
    try:
        return parse_task(task, now=now)
    except InvalidSpec:
        return None


def words_of(task: Mapping[str, Any], now: datetime) -> str:
    """The task's schedule in plain words, as every surface says it."""
    spec = spec_of(task, now)
    return describe_schedule(spec) if spec is not None else "<invalid spec>"


def stopped_after_failures(task: Mapping[str, Any]) -> bool:
    return says_stopped(_status(task))


def _status(task: Mapping[str, Any]) -> Mapping[str, Any]:
    status: Mapping[str, Any] = task.get("status") or {}
    return status


def _last_result(status: Mapping[str, Any]) -> str:
    history = status.get("history") or ()
    return str(history[0].get("result") or NONE) if history else NONE


LIST_HEADERS = (
    "NAME",
    "SCHEDULE",
    "DESCRIPTION",
    "SUSPEND",
    "PHASE",
    "LAST RUN",
    "NEXT RUN",
    "LAST RESULT",
)


def list_row(task: Mapping[str, Any], now: datetime) -> list[str]:
    spec = task.get("spec") or {}
    status = _status(task)
    return [
        task["metadata"]["name"],
        schedule_of(spec),
        one_line(words_of(task, now), 60),
        str(bool(spec.get("suspend"))).lower(),
        status.get("phase") or NONE,
        age(parse_time(status.get("lastScheduleTime")), now),
        until_next(parse_time(status.get("nextRunTime")), now),
        _last_result(status),
    ]


def list_table(tasks: Sequence[Mapping[str, Any]], now: datetime, *, all_namespaces: bool) -> str:
    """The `list` command's table, sorted like `kubectl get` (namespace, then name)."""
    ordered = sorted(tasks, key=lambda t: (t["metadata"]["namespace"], t["metadata"]["name"]))
    if all_namespaces:
        return table(
            ("NAMESPACE", *LIST_HEADERS),
            ([t["metadata"]["namespace"], *list_row(t, now)] for t in ordered),
        )
    return table(LIST_HEADERS, (list_row(t, now) for t in ordered))


HISTORY_HEADERS = ("SCHEDULED", "TRIGGER", "ATTEMPT", "RESULT", "DURATION", "JOB", "MESSAGE")


def duration_of(entry: HistoryEntry) -> str:
    if entry.start_time is None or entry.completion_time is None:
        return NONE
    return human_duration(entry.completion_time - entry.start_time)


def _entry_message(entry: HistoryEntry) -> str:
    """The entry's message; its reason when it has none, unless it succeeded (no news)."""
    reason = "" if entry.result is Result.SUCCEEDED else entry.reason
    return one_line(entry.message or reason) or NONE


def history_table(status: Mapping[str, Any]) -> str:
    """`status.history`, newest first (as the operator keeps it)."""
    return table(
        HISTORY_HEADERS,
        (
            [
                rfc3339(entry.scheduled_time),
                entry.trigger.value,
                str(entry.attempt),
                entry.result.value,
                duration_of(entry),
                entry.job_name or NONE,
                _entry_message(entry),
            ]
            for entry in read_history(status)
        ),
    )


def history_json(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history as the API has it: readable by scripts (`-o json`)."""
    return [dict(entry) for entry in status.get("history") or ()]


@dataclass(frozen=True)
class RunRef:
    """A run that has (or had) a Job: what `logs --run N` counts."""

    job_name: str
    scheduled: datetime
    attempt: int
    result: str  # a history result, or "Running" for an active Job


def runs_with_jobs(status: Mapping[str, Any]) -> list[RunRef]:
    """Active and finished runs that created a Job, newest first (1 is the latest)."""
    runs: dict[str, RunRef] = {}
    for active in status.get("active") or ():
        scheduled = parse_time(active.get("scheduledTime"))
        name = active.get("jobName")
        if name and scheduled is not None:
            runs[name] = RunRef(name, scheduled, int(active.get("attempt") or 1), "Running")
    for entry in read_history(status):
        if entry.job_name and entry.job_name not in runs:
            runs[entry.job_name] = RunRef(
                entry.job_name, entry.scheduled_time, entry.attempt, entry.result.value
            )
    return sorted(runs.values(), key=lambda r: (r.scheduled, r.attempt), reverse=True)


def select_run(task: Mapping[str, Any], number: int) -> RunRef:
    """The `number`th most recent run with a Job (1 = the latest); PluginError if none."""
    meta = task["metadata"]
    where = f'scheduledtask "{meta["name"]}" in namespace "{meta["namespace"]}"'
    if number < 1:
        raise PluginError(f"--run must be 1 or more (1 is the most recent run), not {number}")
    runs = runs_with_jobs(_status(task))
    if not runs:
        raise PluginError(f"{where} has no runs with a Job yet")
    if number > len(runs):
        raise PluginError(
            f"{where} has {len(runs)} run{'s' if len(runs) > 1 else ''} with a Job "
            f"in its history; there is no run {number}"
        )
    return runs[number - 1]


def newest_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Job's latest pod (a Job that retried has several): the one whose logs matter."""
    if not pods:
        return None
    return max(
        pods,
        key=lambda p: (
            p["metadata"].get("creationTimestamp") or "",
            p["metadata"].get("name") or "",
        ),
    )


def default_container(pod: Mapping[str, Any]) -> str:
    """The container `kubectl logs` would pick: the annotated default, else the first."""
    annotations = pod["metadata"].get("annotations") or {}
    chosen = annotations.get("kubectl.kubernetes.io/default-container")
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or ()]
    if chosen in containers:
        return str(chosen)
    if not containers:
        raise PluginError(f'pod "{pod["metadata"]["name"]}" has no containers')
    return str(containers[0])


def run_now_token(now: datetime) -> str:
    """A fresh token (run-now, backfill, resume): `kubectl-<UTC time>-<random>`."""
    return f"kubectl-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _field(label: str, value: str) -> str:
    return f"{label + ':':<20}{value}"


def _when(value: Any, now: datetime, *, future: bool = False) -> str:
    time = parse_time(value)
    if time is None:
        return NONE
    relative = until_next(time, now) if future else f"{age(time, now)} ago"
    return f"{rfc3339(time)} ({relative})"


def _workload(spec: Mapping[str, Any]) -> str:
    task = spec.get("task") or {}
    if "container" in task:
        container = task["container"] or {}
        command = " ".join([*container.get("command", ()), *container.get("args", ())])
        return f"container {container.get('image', NONE)}" + (f": {command}" if command else "")
    if "http" in task:
        http = task["http"] or {}
        return f"http {http.get('method', 'GET')} {http.get('url', NONE)}"
    if "jobTemplate" in spec:
        containers = (
            ((spec["jobTemplate"].get("spec") or {}).get("template") or {}).get("spec") or {}
        ).get("containers") or ()
        images = ", ".join(str(c.get("image", NONE)) for c in containers)
        return f"jobTemplate ({images})" if images else "jobTemplate"
    return NONE


def _retry(spec: Mapping[str, Any]) -> str:
    retry = spec.get("retry") or {}
    if not retry.get("limit"):
        return "none"
    backoff = retry.get("backoff") or {}
    parts = [
        f"{key}={backoff[key]}"
        for key in ("initialSeconds", "factor", "maxSeconds")
        if key in backoff
    ]
    return f"up to {retry['limit']}" + (f" (backoff {', '.join(parts)})" if parts else "")


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def describe(task: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """`describe NAME`: spec summary, status, conditions, active Jobs, history, Events."""
    meta = task["metadata"]
    spec = task.get("spec") or {}
    status = _status(task)
    lines = [
        _field("Name", meta["name"]),
        _field("Namespace", meta["namespace"]),
        _field("Created", _when(meta.get("creationTimestamp"), now)),
        _field("Schedule", schedule_of(spec)),
        _field("Description", words_of(task, now)),
    ]
    if spec.get("startAt") or spec.get("endAt"):
        lines.append(_field("Window", f"{spec.get('startAt', NONE)} to {spec.get('endAt', NONE)}"))
    if spec.get("maxRuns") is not None:
        lines.append(_field("Max Runs", str(spec["maxRuns"])))
    lines += [
        _field("Suspend", str(bool(spec.get("suspend"))).lower()),
        _field("Concurrency Policy", spec.get("concurrencyPolicy", "Allow")),
        _field("Missed Run Policy", spec.get("missedRunPolicy", "RunLatest")),
        _field("Retry", _retry(spec)),
        _field("Timeout", f"{spec['timeoutSeconds']}s" if spec.get("timeoutSeconds") else NONE),
        _field("Workload", _workload(spec)),
        _field("Phase", status.get("phase") or NONE),
        _field("Next Run", _when(status.get("nextRunTime"), now, future=True)),
        _field("Last Schedule", _when(status.get("lastScheduleTime"), now)),
        _field("Last Success", _when(status.get("lastSuccessfulTime"), now)),
        _field("Last Failure", _when(status.get("lastFailureTime"), now)),
        _field(
            "Runs",
            f"{status.get('succeededRuns', 0)} succeeded, {status.get('failedRuns', 0)} failed, "
            f"{status.get('missedRuns', 0)} missed",
        ),
    ]
    token = (meta.get("annotations") or {}).get(ANNOTATION_RUN_NOW)
    if token:
        lines.append(_field("Run-now Token", token))

    conditions = status.get("conditions") or ()
    lines.append("Conditions:")
    if conditions:
        rows = (
            [
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason") or NONE,
                age(parse_time(c.get("lastTransitionTime")), now),
                one_line(c.get("message") or "") or NONE,
            ]
            for c in conditions
        )
        lines.append(_indent(table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows)))
    else:
        lines.append(f"  {NONE}")

    active = status.get("active") or ()
    lines.append("Active Jobs:")
    if active:
        rows = (
            [a.get("jobName", ""), a.get("scheduledTime", ""), str(a.get("attempt", 1))]
            for a in active
        )
        lines.append(_indent(table(("JOB", "SCHEDULED", "ATTEMPT"), rows)))
    else:
        lines.append(f"  {NONE}")

    lines.append("History:")
    lines.append(_indent(history_table(status)) if status.get("history") else f"  {NONE}")

    lines.append("Events:")
    if events:
        lines.append(_indent(events_table(events, now)))
    else:
        lines.append(f"  {NONE}")
    return "\n".join(lines)


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    series = event.get("series") or {}
    return (
        parse_time(series.get("lastObservedTime"))
        or parse_time(event.get("eventTime"))
        or parse_time(event.get("deprecatedLastTimestamp"))
        or parse_time((event.get("metadata") or {}).get("creationTimestamp"))
    )


def events_table(events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """Events oldest first, as `kubectl describe` shows them."""
    ordered = sorted(events, key=lambda e: _event_time(e) or now)
    rows = (
        [
            e.get("type") or NONE,
            e.get("reason") or NONE,
            age(_event_time(e), now),
            e.get("reportingController") or NONE,
            one_line(e.get("note") or "", 120) or NONE,
        ]
        for e in ordered
    )
    return table(("TYPE", "REASON", "AGE", "FROM", "MESSAGE"), rows)


def next_table(runs: Sequence[Upcoming], zone: str, now: datetime) -> str:
    """`next`: each coming run's scheduled time (which names its Job), the same on the
    task's wall clock, when it starts (its jitter applied), and how soon."""
    local = ZoneInfo(zone)
    return table(
        ("#", "SCHEDULED (UTC)", f"LOCAL TIME ({zone})", "STARTS", "IN"),
        (
            [
                str(number),
                rfc3339(run.scheduled),
                run.scheduled.astimezone(local).strftime("%Y-%m-%d %H:%M:%S %Z"),
                rfc3339(run.starts),
                until_next(run.starts, now),
            ]
            for number, run in enumerate(runs, 1)
        ),
    )


def next_json(runs: Sequence[Upcoming]) -> list[dict[str, str]]:
    return [
        {"scheduledTime": rfc3339(run.scheduled), "startTime": rfc3339(run.starts)} for run in runs
    ]
