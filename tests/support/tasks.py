"""ScheduledTasks and their Jobs, as a test sees them through the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from taskmaster.core.times import rfc3339
from tests.support.wait import until, watch_until

GROUP, VERSION, PLURAL = "taskmaster.dev", "v1", "scheduledtasks"
CONTAINER = {"container": {"image": "busybox:1.36", "command": ["true"]}}


def job_template(duration: str = "100ms", exit_code: int = 0, message: str = "") -> dict[str, Any]:
    """A Job template whose pod kwok runs for `duration` and ends with `exit_code`."""
    annotations = {"sim.taskmaster.dev/duration": duration}
    if exit_code:
        annotations["sim.taskmaster.dev/exit-code"] = str(exit_code)
    if message:
        annotations["sim.taskmaster.dev/message"] = message
    return {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                },
            },
        }
    }


def task_object(spec: dict[str, Any], created: datetime) -> dict[str, Any]:
    """A ScheduledTask `ns/t` as the API would hand it to the operator, for unit tests."""
    return {
        "metadata": {
            "namespace": "ns",
            "name": "t",
            "uid": "uid",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": rfc3339(created),
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class SeenJob:
    name: str
    labels: dict[str, str]
    seen_at: float  # time.time() when the watch delivered ADDED

    @property
    def scheduled(self) -> int:
        return int(self.labels["taskmaster.dev/scheduled-time"])


class JobRecorder:
    """Watches a namespace's Jobs from before a test acts, noting when each appears."""

    def __init__(self, batch: client.BatchV1Api, namespace: str) -> None:
        self.batch = batch
        self.namespace = namespace
        self.seen: dict[str, SeenJob] = {}
        self._stop = threading.Event()
        listing = batch.list_namespaced_job(namespace)
        self._version = listing.metadata.resource_version
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                # The API server went away (a fault test) or the version is too
                # old: list again and watch on from there.
                time.sleep(0.2)
                try:
                    listing = self.batch.list_namespaced_job(self.namespace)
                except (ApiException, urllib3.exceptions.HTTPError, OSError):
                    continue
                for job in listing.items:
                    self._saw(job)
                self._version = listing.metadata.resource_version

    def _watch(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.batch.list_namespaced_job,
            self.namespace,
            resource_version=self._version,
            timeout_seconds=1,
        ):
            job = event["object"]
            self._version = job.metadata.resource_version
            if event["type"] == "ADDED":
                self._saw(job)
            if self._stop.is_set():
                stream.stop()

    def _saw(self, job: client.V1Job) -> None:
        if job.metadata.name not in self.seen:
            self.seen[job.metadata.name] = SeenJob(
                job.metadata.name, dict(job.metadata.labels or {}), time.time()
            )

    def jobs(self, task: str | None = None) -> list[SeenJob]:
        found = [
            job
            for job in list(self.seen.values())
            if task is None or job.labels.get("taskmaster.dev/task") == task
        ]
        return sorted(found, key=lambda job: (job.scheduled, job.name))

    def wait_for(self, count: int, task: str | None = None, timeout: float = 30) -> list[SeenJob]:
        return until(
            lambda: len(jobs := self.jobs(task)) >= count and jobs,
            timeout=timeout,
            message=f"{count} jobs of {task or 'any task'}",
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Tasks:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.events_api = client.EventsV1Api(api)

    def create(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ScheduledTask",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        task: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return task

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, body
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """The task as soon as `predicate` holds for it (watched, not polled)."""
        task: dict[str, Any] = watch_until(
            self.custom.list_namespaced_custom_object,
            predicate,
            timeout=timeout,
            message=f"task {name}",
            group=GROUP,
            version=VERSION,
            namespace=self.namespace,
            plural=PLURAL,
            field_selector=f"metadata.name={name}",
        )
        return task

    def jobs(self, name: str) -> list[client.V1Job]:
        jobs = self.batch.list_namespaced_job(
            self.namespace, label_selector=f"taskmaster.dev/task={name}"
        ).items
        return sorted(jobs, key=lambda job: job.metadata.name)

    def events(self, name: str) -> list[tuple[str, str]]:
        events = self.events_api.list_namespaced_event(
            self.namespace, field_selector=f"regarding.name={name}"
        ).items
        return [(event.reason, event.note or "") for event in events]

    def wait_event(
        self, name: str, reason: str, note: str | None = None, timeout: float = 15
    ) -> tuple[str, str]:
        """The task's first Event with that reason (and note): Events follow the status
        they report, so one may still be on its way when the status is seen."""
        wanted = f"{reason} event{f' {note!r}' if note else ''} for {name}"
        return until(
            lambda: next(
                (
                    (r, n)
                    for r, n in self.events(name)
                    if r == reason and (note is None or n == note)
                ),
                None,
            ),
            timeout=timeout,
            message=wanted,
        )

    def recorder(self) -> JobRecorder:
        return JobRecorder(self.batch, self.namespace)


def condition(task: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in task.get("status", {}).get("conditions", []) if c["type"] == kind), {}
    )
    return found


def phase(task: dict[str, Any]) -> str | None:
    value: str | None = task.get("status", {}).get("phase")
    return value


def history(task: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = task.get("status", {}).get("history") or []
    return entries


def finished(task: dict[str, Any]) -> bool:
    """The task's latest run ended (its history has an entry with a result)."""
    return any(entry.get("result") for entry in history(task))
