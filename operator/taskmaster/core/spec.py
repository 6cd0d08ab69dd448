"""Spec parsing: a ScheduledTask's `spec` (as the API server stores it) to a TaskSpec.

The CRD's schema and CEL rules refuse most bad input at `kubectl apply` time;
this module re-checks everything, because objects can get in without them
(webhook off, older CRD) and the operator must then report `Invalid` instead
of failing. Every error names the field it is about.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskmaster.core.schedule import (
    MAX_TIME,
    MIN_TIME,
    Cron,
    Crons,
    Every,
    RunAt,
    Schedule,
    ScheduleError,
    Timeline,
    parse_cron,
    parse_duration,
)
from taskmaster.core.times import parse_time, rfc3339

DEFAULT_STARTING_DEADLINE_SECONDS = 60
DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT = 3
DEFAULT_FAILED_JOBS_HISTORY_LIMIT = 1
DEFAULT_HISTORY_LIMIT = 10
# Kubernetes' own bound for object names; longer task names are refused.
MAX_NAME_LENGTH = 253

# The bounds of the contract (docs/reference.md), the CRD's schema says the same.
# They are what users need, and they keep every computation the operator makes
# for a task small: no field can make a decision loop, overflow or wait.
#
# Times are within schedule.MIN_TIME and MAX_TIME, `every` within schedule.MAX_EVERY.
# A longer count is a window: endAt says it without walking the schedule.
MAX_RUNS = 1000
MAX_STARTING_DEADLINE_SECONDS = 86_400
MAX_JITTER_SECONDS = 86_400
MAX_TIMEOUT_SECONDS = 30 * 86_400
MAX_RETRY_LIMIT = 100
MAX_BACKOFF_SECONDS = 86_400
MAX_BACKOFF_FACTOR = 10
MAX_HISTORY_LIMIT = 100
MAX_CONSECUTIVE_FAILURES = 1000
MAX_HTTP_TIMEOUT_SECONDS = 3600
MAX_TIME_ZONE_LENGTH = 64
MAX_SCHEDULE_LENGTH = 200
# `schedules`: a few crons on one task (each one's times are walked at every step).
MAX_SCHEDULES = 10
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The longest IANA name is 32 characters; a name is letters, digits and _+-, in parts.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
# successCodes: codes and ranges of codes, comma-separated.
_SUCCESS_CODE = r"[1-5][0-9][0-9](-[1-5][0-9][0-9])?"
_SUCCESS_CODES = re.compile(f"{_SUCCESS_CODE}(,{_SUCCESS_CODE})*")
MAX_SUCCESS_CODES_LENGTH = 256

SCHEDULE_KINDS = ("schedule", "schedules", "runAt", "every")
WORKLOAD_KINDS = ("jobTemplate", "task")


_Enum = TypeVar("_Enum", bound=StrEnum)


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class MissedRunPolicy(StrEnum):
    RUN_LATEST = "RunLatest"
    RUN_ALL = "RunAll"
    SKIP = "Skip"


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """The spec cannot be acted on; `errors` name each offending field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 10.0
    factor: float = 2.0
    max_seconds: float = 3600.0

    def delay(self, attempt: int) -> timedelta:
        """The wait before `attempt` (2 is the first retry)."""
        seconds = self.initial_seconds * self.factor ** max(attempt - 2, 0)
        return timedelta(seconds=min(seconds, self.max_seconds))


@dataclass(frozen=True)
class Retry:
    limit: int = 0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True)
class ContainerTask:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HttpTask:
    url: str
    method: str = "GET"
    headers: Mapping[str, Any] = field(default_factory=dict)
    body: str | None = None
    timeout_seconds: int | None = None
    success_codes: str = "200-299"


@dataclass(frozen=True)
class Workload:
    """What a run executes: exactly one of the three is set."""

    # The Job template as compact JSON, interned: tasks with the same template share
    # one copy (with 100,000 tasks, the decoded templates were the largest part of
    # the operator's memory). Decoded afresh for each run (`job_template`).
    template_json: str | None = None
    container: ContainerTask | None = None
    http: HttpTask | None = None

    @classmethod
    def of_template(cls, template: Mapping[str, Any]) -> Workload:
        return cls(template_json=sys.intern(json.dumps(template, separators=(",", ":"))))

    @property
    def job_template(self) -> dict[str, Any] | None:
        """A fresh copy of the Job template, if the workload is one."""
        if self.template_json is None:
            return None
        template: dict[str, Any] = json.loads(self.template_json)
        return template


@dataclass(frozen=True)
class TaskSpec:
    timeline: Timeline
    time_zone: str = "UTC"
    jitter_seconds: int = 0
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline_seconds: int = DEFAULT_STARTING_DEADLINE_SECONDS
    missed_run_policy: MissedRunPolicy = MissedRunPolicy.RUN_LATEST
    timeout_seconds: int | None = None
    retry: Retry = field(default_factory=Retry)
    successful_jobs_history_limit: int = DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT
    failed_jobs_history_limit: int = DEFAULT_FAILED_JOBS_HISTORY_LIMIT
    history_limit: int = DEFAULT_HISTORY_LIMIT
    stop_after_consecutive_failures: int | None = None
    workload: Workload = field(default_factory=Workload)

    @property
    def schedule(self) -> Schedule:
        return self.timeline.schedule

    @property
    def starting_deadline(self) -> timedelta:
        return timedelta(seconds=self.starting_deadline_seconds)


# Equal parts of specs, held once: most tasks share their retry settings. Only
# small parts (a shared part outlives its tasks), and a bounded number of them:
# past it, new values are simply not shared.
_SHARED: dict[Any, Any] = {}
_SHARED_LIMIT = 1_000
_T = TypeVar("_T")


def shared(value: _T) -> _T:
    """The one instance equal to `value` that specs hold (a small, frozen part)."""
    held = _SHARED.get(value)
    if held is not None:
        return held  # type: ignore[no-any-return]
    if len(_SHARED) < _SHARED_LIMIT:
        _SHARED[value] = value
    return value


def whole_second(instant: datetime, *, earlier: bool = False) -> datetime:
    """`instant` if it is a whole second; else the next whole second (the previous one
    with `earlier`)."""
    if not instant.microsecond:
        return instant
    floor = instant.replace(microsecond=0)
    return floor if earlier else floor + timedelta(seconds=1)


def _shown(value: str, limit: int = 80) -> str:
    """A user's string for a message: quoted, and cut if long (messages go into the status)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def rfc3339_instant(value: str) -> datetime:
    """An RFC 3339 time with an offset, from MIN_TIME up to (not including) MAX_TIME, in
    UTC; ValueError says what is wrong with it, for a human."""
    try:
        # RFC 3339 allows lower-case separators; Python's parser wants them upper-case.
        parsed = datetime.fromisoformat(value.upper()) if len(value) <= 64 else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(
            f"{_shown(value)} is not an RFC 3339 time with an offset (2026-05-01T12:00:00Z)"
        )
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:  # its offset takes it past year 9999 or before year 1
        instant = MAX_TIME if parsed.year > MIN_TIME.year else MIN_TIME - timedelta(1)
    if not MIN_TIME <= instant < MAX_TIME:
        raise ValueError(
            f"{_shown(value)} is out of range: from {rfc3339(MIN_TIME)}"
            f" up to (not including) {rfc3339(MAX_TIME)}"
        )
    return instant


class _Reader:
    """Reads typed fields from the raw spec, collecting errors instead of raising."""

    def __init__(self, raw: Mapping[str, Any], path: str) -> None:
        self.raw = raw
        self.path = path
        self.errors: list[FieldError] = []

    def error(self, name: str, message: str) -> None:
        error = FieldError(f"{self.path}.{name}" if name else self.path, message)
        if error not in self.errors:  # a field read twice is reported once
            self.errors.append(error)

    def child(self, name: str) -> _Reader:
        value = self.raw.get(name)
        reader = _Reader(value if isinstance(value, Mapping) else {}, f"{self.path}.{name}")
        if value is not None and not isinstance(value, Mapping):
            self.error(name, "must be an object")
        reader.errors = self.errors
        return reader

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.get(name, default)
        if value is None or isinstance(value, str):
            return value
        self.error(name, f"must be a string, not {type(value).__name__}")
        return default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if isinstance(value, bool):
            return value
        self.error(name, "must be true or false")
        return default

    def integer(
        self, name: str, default: int | None, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        value = self.raw.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, "must be an integer")
            return default
        if value.bit_length() > 64:
            self.error(name, "must be a 64-bit integer")
            return default
        if value < minimum:
            self.error(name, f"must be at least {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.error(name, f"must be at most {maximum}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, int) and value.bit_length() > 64)
            or not math.isfinite(value)
        ):
            self.error(name, "must be a finite number")
            return default
        if value < minimum:
            self.error(name, f"must be at least {minimum:g}, got {value:.6g}")
            return default
        if value > maximum:
            self.error(name, f"must be at most {maximum:g}, got {value:.6g}")
            return default
        return float(value)

    def time(self, name: str, *, earlier: bool = False) -> datetime | None:
        """An RFC 3339 time, at a whole second: the next one, or with `earlier` the one
        before (a fraction is kept nowhere: not in Job names, labels or the status)."""
        value = self.string(name)
        if value is None:
            return None
        try:
            instant = rfc3339_instant(value)
        except ValueError as error:
            self.error(name, str(error))
            return None
        return whole_second(instant, earlier=earlier)

    def choice(self, name: str, enum: type[_Enum], default: _Enum) -> _Enum:
        value = self.string(name, default.value)
        try:
            return enum(value or "")
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            self.error(name, f"must be one of {allowed}, got {_shown(str(value))}")
            return default

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.raw.get(name, [])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.error(name, "must be a list of strings")
        return ()


def _zone(spec: _Reader, default: str = "UTC") -> ZoneInfo:
    name = spec.string("timeZone", default)
    if name == "":
        # As the CronJob controller: an empty zone is a mistake, not a way to say UTC.
        spec.error("timeZone", "must not be empty: omit it for UTC, or name an IANA time zone")
        return ZoneInfo("UTC")
    name = name or default
    if len(name) <= MAX_TIME_ZONE_LENGTH and _ZONE_NAME.fullmatch(name):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    spec.error("timeZone", f"{_shown(name)} is not an IANA time zone (like Europe/Paris)")
    return ZoneInfo("UTC")


def _exactly_one(spec: _Reader, kinds: tuple[str, ...]) -> str | None:
    given = [kind for kind in kinds if spec.raw.get(kind) is not None]
    if len(given) == 1:
        return given[0]
    spec.error(
        "",
        f"exactly one of {', '.join(kinds)} is required"
        + (f"; got {', '.join(given)}" if given else ""),
    )
    return None


def _schedule(spec: _Reader, zone: ZoneInfo, hash_key: str, created: datetime) -> Schedule | None:
    kind = _exactly_one(spec, SCHEDULE_KINDS)
    if kind == "schedule":
        return _cron(spec, zone, hash_key)
    elif kind == "schedules":
        return _crons(spec, zone, hash_key)
    elif kind == "runAt":
        at = spec.time("runAt")
        return RunAt(at) if at is not None else None
    elif kind == "every":
        return _every(spec, created)
    return None


def _cron(spec: _Reader, zone: ZoneInfo, hash_key: str) -> Cron | None:
    expression = spec.string("schedule") or ""
    if len(expression) > MAX_SCHEDULE_LENGTH:
        spec.error("schedule", f"must be at most {MAX_SCHEDULE_LENGTH} characters")
        return None
    try:
        return parse_cron(expression, zone, hash_key)
    except ScheduleError as error:
        spec.error("schedule", str(error))
    return None


def _crons(spec: _Reader, zone: ZoneInfo, hash_key: str) -> Crons | None:
    entries = spec.raw.get("schedules")
    if not isinstance(entries, list) or not entries:
        spec.error("schedules", "must be a list of at least one {schedule, timeZone}")
        return None
    if len(entries) > MAX_SCHEDULES:
        spec.error("schedules", f"must have at most {MAX_SCHEDULES} entries, got {len(entries)}")
        return None
    crons = []
    for index, raw in enumerate(entries):
        entry = _Reader(raw if isinstance(raw, Mapping) else {}, f"{spec.path}.schedules[{index}]")
        entry.errors = spec.errors
        if not isinstance(raw, Mapping):
            entry.error("", "must be an object {schedule, timeZone}")
            continue
        # An entry without a zone follows the task's (spec.timeZone, default UTC).
        cron = _cron(entry, _zone(entry, default=str(zone.key)), hash_key)
        if cron is not None:
            crons.append(cron)
    return Crons(tuple(crons)) if len(crons) == len(entries) else None


def _every(spec: _Reader, created: datetime) -> Every | None:
    text = spec.string("every") or ""
    try:
        interval = parse_duration(text)
    except ScheduleError as error:
        spec.error("every", str(error))
        return None
    if interval < timedelta(seconds=1):
        spec.error("every", f"{text!r} is shorter than the minimum of 1s")
        return None
    if interval % timedelta(seconds=1):
        spec.error("every", f"{text!r} is not a whole number of seconds")
        return None
    return Every(interval, anchor=spec.time("startAt") or created)


def _workload(spec: _Reader) -> Workload:
    kind = _exactly_one(spec, WORKLOAD_KINDS)
    if kind == "jobTemplate":
        template = spec.raw["jobTemplate"]
        if isinstance(template, Mapping) and isinstance(template.get("spec"), Mapping):
            return Workload.of_template(template)
        spec.error("jobTemplate", "must be a Job template with a spec")
    elif kind == "task":
        task = spec.child("task")
        task_kind = _exactly_one(task, ("container", "http"))
        if task_kind == "container":
            return Workload(container=_container(task.child("container")))
        if task_kind == "http":
            return Workload(http=_http(task.child("http")))
    return Workload()


def _container(container: _Reader) -> ContainerTask | None:
    image = container.string("image")
    if not image:
        container.error("image", "is required")
        return None
    env = container.raw.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, Mapping) for e in env):
        container.error("env", "must be a list of {name, value} objects")
        env = []
    resources = container.raw.get("resources")
    if resources is not None and not isinstance(resources, Mapping):
        container.error("resources", "must be an object")
        resources = None
    return ContainerTask(
        image=image,
        command=container.strings("command"),
        args=container.strings("args"),
        env=tuple(env),
        resources=resources,
    )


def _http(http: _Reader) -> HttpTask | None:
    url = http.string("url")
    if not url or not url.startswith(("http://", "https://")):
        http.error("url", "must be an http:// or https:// URL")
        return None
    headers = http.raw.get("headers", {})
    if not isinstance(headers, Mapping):
        http.error("headers", "must be an object of header names to values")
        headers = {}
    # The schema's enum is upper-case; an object that got past it is read leniently.
    method = (http.string("method", "GET") or "").upper()
    if method not in HTTP_METHODS:
        http.error("method", f"must be one of {', '.join(HTTP_METHODS)}, got {_shown(method)}")
    return HttpTask(
        url=url,
        method=method if method in HTTP_METHODS else "GET",
        headers=headers,
        body=http.string("body"),
        timeout_seconds=http.integer(
            "timeoutSeconds", None, minimum=1, maximum=MAX_HTTP_TIMEOUT_SECONDS
        ),
        success_codes=_success_codes(http),
    )


def _success_codes(http: _Reader) -> str:
    codes = http.string("successCodes", "200-299") or ""
    if len(codes) <= MAX_SUCCESS_CODES_LENGTH and _SUCCESS_CODES.fullmatch(codes):
        ranges = [part.split("-") for part in codes.split(",")]
        if all(int(r[0]) <= int(r[-1]) for r in ranges):
            return codes
    http.error(
        "successCodes",
        f"{_shown(codes)} is not a list of HTTP status codes and ranges like 200-299,304",
    )
    return "200-299"


def parse_spec(raw: Mapping[str, Any], *, namespace: str, name: str, created: datetime) -> TaskSpec:
    """Turn a ScheduledTask's spec into a TaskSpec, or raise InvalidSpec naming every bad field."""
    spec = _Reader(raw, "spec")
    # A stand-in "now" at CREATE has a fraction; the API server will store the second.
    created = whole_second(created, earlier=True)
    if len(name) > MAX_NAME_LENGTH:
        spec.errors.append(
            FieldError("metadata.name", f"must be at most {MAX_NAME_LENGTH} characters")
        )
    zone = _zone(spec)
    schedule = _schedule(spec, zone, f"{namespace}/{name}", created)
    start_at = spec.time("startAt")
    end_at = spec.time("endAt", earlier=True)
    max_runs = spec.integer("maxRuns", None, minimum=1, maximum=MAX_RUNS)
    if isinstance(schedule, RunAt):
        for window_field in ("startAt", "endAt", "maxRuns"):
            if spec.raw.get(window_field) is not None:
                spec.error(
                    window_field, "applies to recurring tasks (schedule, schedules or every) only"
                )
    if start_at and end_at and end_at <= start_at:
        spec.error("endAt", "must be after startAt")
    retry = spec.child("retry")
    backoff = retry.child("backoff")
    workload = _workload(spec)
    task_spec = TaskSpec(
        timeline=Timeline(
            schedule or RunAt(created),
            created=created,
            start_at=start_at,
            end_at=end_at,
            max_runs=max_runs,
        ),
        time_zone=str(zone.key),
        jitter_seconds=spec.integer("jitterSeconds", 0, maximum=MAX_JITTER_SECONDS) or 0,
        suspend=spec.boolean("suspend", False),
        concurrency_policy=spec.choice(
            "concurrencyPolicy", ConcurrencyPolicy, ConcurrencyPolicy.ALLOW
        ),
        starting_deadline_seconds=spec.integer(
            "startingDeadlineSeconds",
            DEFAULT_STARTING_DEADLINE_SECONDS,
            maximum=MAX_STARTING_DEADLINE_SECONDS,
        )
        or 0,
        missed_run_policy=spec.choice(
            "missedRunPolicy", MissedRunPolicy, MissedRunPolicy.RUN_LATEST
        ),
        timeout_seconds=spec.integer(
            "timeoutSeconds", None, minimum=1, maximum=MAX_TIMEOUT_SECONDS
        ),
        retry=shared(
            Retry(
                limit=retry.integer("limit", 0, maximum=MAX_RETRY_LIMIT) or 0,
                backoff=Backoff(
                    initial_seconds=backoff.number(
                        "initialSeconds", 10.0, minimum=0, maximum=MAX_BACKOFF_SECONDS
                    ),
                    factor=backoff.number("factor", 2.0, minimum=1, maximum=MAX_BACKOFF_FACTOR),
                    max_seconds=backoff.number(
                        "maxSeconds", 3600.0, minimum=0, maximum=MAX_BACKOFF_SECONDS
                    ),
                ),
            )
        ),
        successful_jobs_history_limit=spec.integer(
            "successfulJobsHistoryLimit",
            DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
            maximum=MAX_HISTORY_LIMIT,
        )
        or 0,
        failed_jobs_history_limit=spec.integer(
            "failedJobsHistoryLimit", DEFAULT_FAILED_JOBS_HISTORY_LIMIT, maximum=MAX_HISTORY_LIMIT
        )
        or 0,
        history_limit=spec.integer("historyLimit", DEFAULT_HISTORY_LIMIT, maximum=MAX_HISTORY_LIMIT)
        or 0,
        stop_after_consecutive_failures=spec.integer(
            "stopAfterConsecutiveFailures", None, minimum=1, maximum=MAX_CONSECUTIVE_FAILURES
        ),
        workload=workload,
    )
    if spec.errors:
        raise InvalidSpec(spec.errors)
    return task_spec


def parse_task(task: Mapping[str, Any], *, now: datetime) -> TaskSpec:
    """The task's spec as the operator reads it (scheduler and webhook alike);
    InvalidSpec names every bad field. `now` stands in for a creation time not
    assigned yet (an object under review at CREATE)."""
    metadata = task.get("metadata") or {}
    raw = task.get("spec")
    return parse_spec(
        raw if isinstance(raw, Mapping) else {},
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        created=parse_time(metadata.get("creationTimestamp")) or now,
    )
