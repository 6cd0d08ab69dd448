"""The scheduler's cache: every task, Job and pod the watches report, as the
reconcile reads them (an informer's store, with the handlers that fill it).

A handler updates memory and says which task to look at again (`changed`) or
which is gone (`gone`); it never acts itself.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from taskmaster.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_RESUME,
    ANNOTATION_RUN_NOW,
    KIND,
    TaskRef,
)
from taskmaster.core.spec import FieldError, InvalidSpec, TaskSpec, parse_task
from taskmaster.core.status import JobView, PodOutcome
from taskmaster.core.times import parse_time
from taskmaster.shell.timebox import TIME_BOX_SECONDS, Overrun, time_box

# Back-off after an API error or an overrun on one task (seconds): doubles up to the cap.
_ERROR_BACKOFF = (1.0, 60.0)


def version_of(body: Mapping[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def _spec_changed_at(managed_fields: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The latest time a manager wrote the spec, as the object's managedFields say.

    A manager's time is that of its latest write of any of its fields, so this
    is never before the spec's last change (it may be after it: then times
    between count as passed while suspended, never as run twice).
    """
    times = [
        parse_time(entry.get("time"))
        for entry in managed_fields
        if isinstance(entry, Mapping)
        and entry.get("subresource") != "status"
        and "f:spec" in (entry.get("fieldsV1") or {})
    ]
    return max((t for t in times if t is not None), default=None)


def _packed(value: Any) -> bytes:
    """JSON, compressed: a status with its history is a few KB of repetitive JSON and
    compresses about sixfold; reading it back costs less than decoding the JSON."""
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)


def _unpacked(data: bytes) -> Any:
    return json.loads(zlib.decompress(data))


_EMPTY = _packed({})


@dataclass(slots=True)
class Unwritten:
    """A status decided and not yet written, and what to report once it is.

    The status is held packed: when the API server is slower than decisions (a
    burst, or the client's rate limit binding), thousands wait to be written.
    """

    # Merge patch of the status: every field the operator owns.
    packed_status: bytes = _EMPTY
    # Events to post: (type, reason, message, action).
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    # The Jobs the status was decided from: judged for expiry once it is written.
    jobs: list[JobView] = field(default_factory=list)
    # Jobs replaced (concurrencyPolicy Replace): deleted once the status is written.
    replaced: list[str] = field(default_factory=list)
    # Jobs recorded in the status decided: not new again, whatever history it keeps.
    recorded: set[str] = field(default_factory=set)
    # The decided phase, if it changed (read by every metrics scrape).
    phase: str | None = None
    # In line for its budget (`Recorder.deferred`): it only records runs shed for
    # want of a slot.
    deferred: bool = False

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = _unpacked(self.packed_status)
        return status

    def update(self, patch: Mapping[str, Any]) -> None:
        self.packed_status = _packed({**self.status, **patch})
        if "phase" in patch:
            self.phase = patch["phase"]


@dataclass(slots=True)
class Task:
    """What the operator keeps of one ScheduledTask.

    Not the object: its spec only until it is parsed (once per generation), and
    its status as compressed JSON, read when needed; what is read more often
    than that is kept beside them. With 10,000 tasks, whole objects as Python
    dicts took five times the memory of the same as JSON, and JSON spec and
    status took most of what remained.
    """

    ref: TaskRef
    # The spec (with the metadata its parse reads) while not parsed yet, and the
    # status, packed (`_packed`).
    spec_source: bytes | None = None
    object_status: bytes = _EMPTY
    version: int = 0
    generation: int | None = None
    run_now_token: str | None = None
    resume_token: str | None = None
    backfill_request: str | None = None
    phase: str | None = None
    spec: TaskSpec | None = None
    invalid: InvalidSpec | None = None
    # The generation `spec`/`invalid` were parsed from.
    parsed: int | None = None
    # When the spec last changed, from managedFields (which are not kept).
    spec_changed_at: datetime | None = None
    failures: int = 0
    # After a decision overran its time box: (generation, until when) no decision is tried.
    held: tuple[int | None, float] | None = None
    # The oldest run the last decision held for want of a slot (--max-active-runs),
    # and when the task last reported that it waits.
    waiting_from: datetime | None = None
    waiting_reported: datetime | None = None
    unwritten: Unwritten | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Task:
        metadata = body["metadata"]
        # The namespace interned: every task of a namespace holds the same string.
        namespace = sys.intern(metadata["namespace"])
        task = cls(TaskRef(namespace, metadata["name"], metadata["uid"]))
        task.keep(body)
        return task

    def keep(self, body: Mapping[str, Any]) -> None:
        """Hold this version of the object."""
        metadata = body["metadata"]
        self.spec_changed_at = _spec_changed_at(metadata.get("managedFields") or ())
        status = body.get("status") or {}
        self.object_status = _packed(status)
        self.version = version_of(body)
        self.generation = metadata.get("generation")
        if self.parsed is None or self.parsed != self.generation:
            read = {key: metadata.get(key) for key in ("namespace", "name", "creationTimestamp")}
            self.spec_source = _packed({"metadata": read, "spec": body.get("spec")})
        annotations = metadata.get("annotations") or {}
        self.run_now_token = annotations.get(ANNOTATION_RUN_NOW)
        self.resume_token = annotations.get(ANNOTATION_RESUME)
        self.backfill_request = annotations.get(ANNOTATION_BACKFILL)
        self.phase = status.get("phase")

    @property
    def status(self) -> dict[str, Any]:
        """The status as decided: the object's, with what is not yet written over it."""
        status: dict[str, Any] = _unpacked(self.object_status)
        if self.unwritten is None:
            return status
        merged = {**status, **self.unwritten.status}
        return {key: value for key, value in merged.items() if value is not None}

    @property
    def recorded_jobs(self) -> frozenset[str]:
        """The Jobs recorded in the status decided and not yet written."""
        return frozenset(self.unwritten.recorded) if self.unwritten else frozenset()

    @property
    def decided_phase(self) -> str | None:
        if self.unwritten is not None and self.unwritten.phase is not None:
            return self.unwritten.phase
        return self.phase

    def resume_at(self) -> float | None:
        """How urgent a first reconcile is: by the next run its status announces.

        After a start or a failover every task is reconciled; those whose runs
        fall due soonest go first, or a run due in a few seconds would wait
        behind thousands of tasks that have nothing to do for minutes.
        """
        status = _unpacked(self.object_status)
        next_run = parse_time(status.get("nextRunTime"))
        if next_run is None or status.get("observedGeneration") != self.generation:
            return None  # now
        return next_run.timestamp()

    def parse(self, now: datetime) -> bool:
        """Parse the spec once per generation; True if that ran past its time box
        (the task is then Invalid until its spec changes). `now` stands in for a
        creation time the object lacks."""
        if self.parsed == self.generation and self.parsed is not None:
            return False
        self.parsed = self.generation
        source = self.spec_source
        if self.generation is not None:
            self.spec_source = None  # parsed: not needed until the spec changes
        try:
            with time_box(TIME_BOX_SECONDS):
                self.spec = parse_task(_unpacked(source) if source else {}, now=now)
            self.invalid = None
        except InvalidSpec as invalid:
            self.spec, self.invalid = None, invalid
        except Overrun:
            why = f"reading it took longer than {TIME_BOX_SECONDS:g}s; set aside until it changes"
            self.spec, self.invalid = None, InvalidSpec([FieldError("spec", why)])
            return True
        return False

    def back_off(self) -> float:
        """How long to wait before deciding for the task again: doubles with each
        failure in a row (reset by a decision carried out)."""
        self.failures += 1
        first, cap = _ERROR_BACKOFF
        return min(first * 2.0 ** (self.failures - 1), cap)


class Cache:
    """Tasks by key (`namespace/name`), their Jobs by name, and how Jobs' pods ended.

    `changed(key, at)` asks for a reconcile of the task as urgent as something
    due at `at` (None: now); `gone(namespace, name)` says a task was deleted.
    """

    def __init__(
        self, changed: Callable[[str, float | None], None], gone: Callable[[str, str], None]
    ) -> None:
        self.changed = changed
        self.gone = gone
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, dict[str, JobView]] = {}
        # How the pods of each Job (namespace, name) ended: exit, message, disruption.
        self.pods: dict[tuple[str, str], PodOutcome] = {}
        self._job_versions: dict[tuple[str, str], int] = {}
        # Jobs held that are active (JobView.active): the runs in flight.
        self.active_runs = 0

    def put_job(self, key: str, name: str, view: JobView) -> None:
        """Hold this view of one of the task's Jobs."""
        jobs = self.jobs.setdefault(key, {})
        before = jobs.get(name)
        self.active_runs += view.active - (before is not None and before.active)
        jobs[name] = view

    def drop_job(self, key: str, name: str) -> None:
        """Forget one of the task's Jobs (deleted); a task without Jobs holds no dict."""
        jobs = self.jobs.get(key)
        if jobs is None:
            return
        before = jobs.pop(name, None)
        self.active_runs -= before is not None and before.active
        if not jobs:
            del self.jobs[key]

    def jobs_of(self, key: str) -> Mapping[str, JobView]:
        """The task's Jobs by name (an empty mapping when it has none)."""
        return self.jobs.get(key) or {}

    def task_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = sys.intern(f"{metadata['namespace']}/{metadata['name']}")
        if event_type == "DELETED":
            self.tasks.pop(key, None)
            self.gone(metadata["namespace"], metadata["name"])
            return
        task = self.tasks.get(key)
        if task is not None and task.ref.uid == metadata["uid"]:
            version, held = version_of(body), task.version
            if version < held:
                return  # older than what the operator itself wrote
            if version == held and "resourceVersion" in metadata:
                # The very object already held: mostly the echo of the operator's
                # own status write, which would only redo the reconcile it came from.
                return
            task.keep(body)
            self.changed(key, None)
        else:
            task = self.tasks[key] = Task.of(body)
            self.changed(key, task.resume_at())

    def job_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        owner = next(
            (
                ref
                for ref in metadata.get("ownerReferences") or ()
                if ref.get("kind") == KIND and ref.get("controller")
            ),
            None,
        )
        if owner is None:
            return
        key = sys.intern(f"{metadata['namespace']}/{owner['name']}")
        name = metadata["name"]
        if event_type == "DELETED":
            self.drop_job(key, name)
            self._job_versions.pop((key, name), None)
            self.pods.pop((metadata["namespace"], name), None)
        else:
            version = version_of(body)
            if version < self._job_versions.get((key, name), 0):
                return
            view = JobView.from_job(body)
            if view is None:
                return
            self._job_versions[(key, name)] = version
            task = self.tasks.get(key)
            if task is not None and task.unwritten and name in task.unwritten.replaced:
                view = replace(view, deleting=True)  # replaced: deleted once recorded
            if self.jobs_of(key).get(name) == view:
                # Most of a Job's updates (pod counts, finalizers, the controller's
                # bookkeeping) change nothing a decision or the status reads.
                return
            self.put_job(key, name, view)
        self.changed(key, None)

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            return  # what it ended with stays known until its Job goes
        metadata = body["metadata"]
        labels = metadata.get("labels") or {}
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        outcome = PodOutcome.from_pod(body)
        if job and outcome is not None:
            self.pods[(metadata["namespace"], job)] = outcome
