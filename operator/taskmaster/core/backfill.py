"""Backfill: run every scheduled time of a past range once, oldest first.

A backfill is asked for with the task's `taskmaster.dev/backfill` annotation,
a JSON object `{"token": ..., "from": ..., "to": ...}` (RFC 3339 times, both
ends included), as a manual run is asked for with `run-now`: declaratively,
so that RBAC and GitOps see it, once per token. `kubectl taskmaster backfill`
writes it.

Its runs have trigger `backfill` and Job names made of the token and the
scheduled time, so each runs exactly once whatever the operator's restarts;
`status.backfill` records how far it got. They obey concurrencyPolicy: under
Allow they start together (at most MAX_RUNS_PER_DECISION per decision), under
Forbid and Replace one at a time, each once no run of the task is active: a
backfill run waits, it is neither skipped nor does it replace one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any

from taskmaster.core.names import Run, Trigger
from taskmaster.core.schedule import Every, RunAt, Schedule
from taskmaster.core.spec import rfc3339_instant
from taskmaster.core.times import parse_time, rfc3339

# The most runs one backfill may create (docs/reference.md): a larger range is
# refused with its count; split it in several backfills.
MAX_BACKFILL_RUNS = 1000
# The annotation's longest value: a token and two times fit many times over.
_MAX_ANNOTATION = 1024
_INSTANT = timedelta(microseconds=1)


class BackfillState(StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    REFUSED = "Refused"


@dataclass(frozen=True)
class BackfillRequest:
    """A valid request: its token and range (both ends included)."""

    token: str
    start: datetime
    end: datetime

    def annotation(self) -> str:
        return json.dumps(
            {"token": self.token, "from": rfc3339(self.start), "to": rfc3339(self.end)}
        )


class BadRequest(ValueError):
    """An annotation that is not a backfill request; the message says why, naming the
    key at fault (`key`: token, from or to) when one is."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.reason = message


def parse_request(value: str) -> BackfillRequest:
    """Read the annotation; BadRequest names what is wrong."""
    if len(value) > _MAX_ANNOTATION:
        raise BadRequest(f"is longer than {_MAX_ANNOTATION} characters")
    try:
        raw = json.loads(value)
    except ValueError:
        raw = None
    if not isinstance(raw, Mapping):
        raise BadRequest('must be a JSON object {"token": ..., "from": ..., "to": ...}')
    token = raw.get("token")
    if not isinstance(token, str) or not token:
        raise BadRequest("must be a non-empty string", "token")
    ends = []
    for key in ("from", "to"):
        when = raw.get(key)
        if not isinstance(when, str):
            raise BadRequest("must be an RFC 3339 time with an offset", key)
        try:
            ends.append(rfc3339_instant(when))
        except ValueError as error:
            raise BadRequest(str(error), key) from None
    start, end = ends
    if end < start:
        raise BadRequest("must not be before from", "to")
    return BackfillRequest(token, start, end)


def _every_range(every: Every, start: datetime, end: datetime) -> range:
    """The k of the times anchor + k * interval in [start, end]; before the anchor too:
    the interval's phase goes back as far as the range does."""
    first = -((every.anchor - start) // every.interval)  # the ceiling of (start - anchor) / i
    return range(first, (end - every.anchor) // every.interval + 1)


def times(schedule: Schedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """The schedule's times in [start, end], oldest first (the task's window and
    creation do not apply: a backfill is for times the schedule did not run)."""
    if isinstance(schedule, Every):
        yield from (
            schedule.anchor + k * schedule.interval for k in _every_range(schedule, start, end)
        )
        return
    for time in schedule.times(start - _INSTANT):
        if time > end:
            return
        yield time


def count(schedule: Schedule, start: datetime, end: datetime) -> tuple[int, bool]:
    """How many times the range holds, and whether that is exact: beyond
    MAX_BACKFILL_RUNS a cron's count is estimated from the spacing of its first
    times (walking them all could take long; `every` is counted exactly)."""
    if isinstance(schedule, Every):
        return len(_every_range(schedule, start, end)), True
    if isinstance(schedule, RunAt):
        return int(start <= schedule.at <= end), True
    walked = list(islice(times(schedule, start, end), MAX_BACKFILL_RUNS + 1))
    if len(walked) <= MAX_BACKFILL_RUNS:
        return len(walked), True
    spacing = (walked[-1] - walked[0]) / (len(walked) - 1)
    return int((end - walked[0]) / spacing) + 1, False


def check(schedule: Schedule, request: BackfillRequest, now: datetime) -> tuple[int, str | None]:
    """The number of runs the request makes, and why it is refused (None if it is not)."""
    if request.end > now:
        return 0, (
            f"to ({rfc3339(request.end)}) is in the future: a backfill runs past times"
            " (the schedule runs the others)"
        )
    runs, exact = count(schedule, request.start, request.end)
    if runs > MAX_BACKFILL_RUNS:
        how_many = str(runs) if exact else f"about {runs}"
        return runs, (
            f"the range holds {how_many} runs, more than the {MAX_BACKFILL_RUNS} one backfill"
            " may create: split it into smaller ranges"
        )
    if runs == 0:
        return 0, "the range holds no scheduled time"
    return runs, None


@dataclass(frozen=True)
class Backfill:
    """`status.backfill`: the last request acted on and how far it got."""

    token: str
    state: BackfillState
    start: datetime | None = None
    end: datetime | None = None
    runs: int = 0
    started: int = 0
    # The latest scheduled time of the range dealt with (started or found started).
    last_scheduled_time: datetime | None = None
    message: str = ""

    def to_status(self) -> dict[str, Any]:
        # Every key, null where there is no value: the status is written as a merge
        # patch, and a key of the previous backfill must not outlive it.
        return {
            "token": self.token,
            "state": self.state.value,
            "from": rfc3339(self.start) if self.start else None,
            "to": rfc3339(self.end) if self.end else None,
            "runs": self.runs,
            "started": self.started,
            "lastScheduledTime": (
                rfc3339(self.last_scheduled_time) if self.last_scheduled_time else None
            ),
            "message": self.message or None,
        }

    @classmethod
    def from_status(cls, raw: Any) -> Backfill | None:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("token"), str):
            return None
        try:
            state = BackfillState(str(raw.get("state")))
        except ValueError:
            return None
        return cls(
            token=raw["token"],
            state=state,
            start=parse_time(raw.get("from")),
            end=parse_time(raw.get("to")),
            runs=_int(raw.get("runs")),
            started=_int(raw.get("started")),
            last_scheduled_time=parse_time(raw.get("lastScheduledTime")),
            message=str(raw.get("message") or ""),
        )

    def advanced(self, last: datetime, started: int, done: bool) -> Backfill:
        return replace(
            self,
            last_scheduled_time=last,
            started=self.started + started,
            state=BackfillState.COMPLETED if done else self.state,
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def refused(token: str, message: str, request: BackfillRequest | None = None) -> Backfill:
    return Backfill(
        token=token,
        state=BackfillState.REFUSED,
        start=request.start if request else None,
        end=request.end if request else None,
        message=message,
    )


def next_runs(
    schedule: Schedule,
    progress: Backfill,
    started: Callable[[Run], bool],
    limit: int,
) -> tuple[list[Run], Backfill]:
    """The backfill's next runs (at most `limit`, oldest first) and its progress after them.

    Times after the last one recorded whose run `started` already (its Job or its
    history entry exists: the status that said so was lost) are passed over,
    counted as started; so no time runs twice and none is skipped.
    """
    if progress.state is not BackfillState.RUNNING or progress.start is None or not progress.end:
        return [], progress
    last = progress.last_scheduled_time
    after = last + _INSTANT if last is not None else progress.start
    runs: list[Run] = []
    found, done = 0, True
    for time in times(schedule, after, progress.end):
        run = Run(time, trigger=Trigger.BACKFILL, token=progress.token, backfill=True)
        if started(run):
            found += 1
        elif len(runs) == limit:
            done = False
            break
        else:
            runs.append(run)
        last = time
    if last is None:
        return runs, progress
    return runs, progress.advanced(last, found + len(runs), done)


def backfill_events(before: Backfill | None, after: Backfill | None) -> list[tuple[str, str, str]]:
    """The Events (type, reason, message) of a change of status.backfill: a backfill
    started, completed (every run started) or refused."""
    if after is None:
        return []
    new = before is None or before.token != after.token
    if not new and before is not None and before.state is after.state:
        return []
    if after.state is BackfillState.REFUSED:
        return [("Warning", "BackfillRefused", f"backfill {after.token}: {after.message}")]
    span = (
        f"from {rfc3339(after.start)} to {rfc3339(after.end)}" if after.start and after.end else ""
    )
    events = []
    if new:
        message = f"backfill {after.token}: {after.runs} runs {span}, oldest first"
        events.append(("Normal", "BackfillStarted", message))
    if after.state is BackfillState.COMPLETED:
        message = f"backfill {after.token}: all {after.runs} runs {span} started"
        events.append(("Normal", "BackfillCompleted", message))
    return events
