"""The contract's names: API group, labels, annotations, and the identity of a run."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

GROUP = "taskmaster.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScheduledTask"
PLURAL = "scheduledtasks"

LABEL_TASK = f"{GROUP}/task"
LABEL_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_TRIGGER = f"{GROUP}/trigger"
ANNOTATION_SCHEDULED_AT = f"{GROUP}/scheduled-at"
ANNOTATION_RUN_NOW = f"{GROUP}/run-now"
# A new value starts a task stopped by stopAfterConsecutiveFailures again.
ANNOTATION_RESUME = f"{GROUP}/resume"
# On a task: a backfill request (token and range); on a Job: the token of its backfill.
ANNOTATION_BACKFILL = f"{GROUP}/backfill"

# Job names end up in the `job-name` label of their pods, so they must be
# valid label values: 63 characters at most.
MAX_JOB_NAME = 63
# The longest suffix a Job name gets: "-m" + 10 hex digits of the run-now token
# (a scheduled time in unix seconds is 10 digits) and "-" + an attempt of up to
# 3 digits.
_LONGEST_SUFFIX = len("-m0123456789-999")
MAX_BASE = MAX_JOB_NAME - _LONGEST_SUFFIX


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    CATCH_UP = "catch-up"
    BACKFILL = "backfill"


@dataclass(frozen=True)
class TaskRef:
    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        # Interned: the caches, the work queue and the metrics key by it, one copy each.
        return sys.intern(f"{self.namespace}/{self.name}")


@dataclass(frozen=True)
class Run:
    """One execution: a scheduled time (or the time a manual run was asked for) and an attempt."""

    scheduled: datetime
    attempt: int = 1
    trigger: Trigger = Trigger.SCHEDULE
    # The run-now token a manual run answers (it, not the time, names the Job); or
    # the token of the backfill a run belongs to (it and the time name the Job).
    token: str | None = None
    backfill: bool = False


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def short_name(name: str, limit: int = MAX_BASE) -> str:
    """`name` if it fits in `limit`, else a prefix and a hash of the whole: stable and unique."""
    if len(name) <= limit:
        return name
    digest = _digest(name, 8)
    prefix = name[: limit - len(digest) - 1].rstrip("-.")
    return f"{prefix}-{digest}"


def task_label(task_name: str) -> str:
    """The `taskmaster.dev/task` label value: the task's name, shortened to fit a label."""
    return short_name(task_name, MAX_JOB_NAME)


def job_name(task_name: str, run: Run) -> str:
    """The deterministic Job name of a run: creating it twice gets AlreadyExists."""
    base = short_name(task_name)
    if run.token is not None and run.backfill:
        # Not the time alone: a time may be backfilled again, by another request.
        name = f"{base}-b{_digest(f'{run.token}@{int(run.scheduled.timestamp())}', 10)}"
    elif run.token is not None:
        name = f"{base}-m{_digest(run.token, 10)}"
    else:
        name = f"{base}-{int(run.scheduled.timestamp())}"
    return name if run.attempt == 1 else f"{name}-{run.attempt}"
