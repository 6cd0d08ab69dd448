"""Times as the Kubernetes API writes and reads them: one home for every surface."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def rfc3339(time: datetime) -> str:
    """A whole-second UTC time, as status fields and labels carry it (`2026-05-01T00:00:00Z`)."""
    # isoformat, not strftime: this runs several times per run and strftime is slower.
    return time.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def micro_time(time: datetime) -> str:
    """A MicroTime, as Events and Leases carry it (`2026-05-01T00:00:00.000000Z`)."""
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    """A time the API server wrote, in UTC; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


# Where the shell reads the time: the wall clock, or a test's fixed instants.
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)
