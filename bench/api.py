"""A lean asyncio client of the API server: bulk writes, counts, and a Job watch.

The benchmark drives tens of thousands of objects and times watch events to
the millisecond, so it talks HTTP directly (aiohttp, JSON as bytes) rather
than through a generated client whose model conversions would cost more than
the requests and delay the events being timed.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

JSON = dict[str, Any]

# What every kind the benchmark handles is called in a namespace.
TASKS = "/apis/taskmaster.dev/v1/namespaces/{ns}/scheduledtasks"
CRONJOBS = "/apis/batch/v1/namespaces/{ns}/cronjobs"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
PODS = "/api/v1/namespaces/{ns}/pods"
EVENTS = "/apis/events.k8s.io/v1/namespaces/{ns}/events"
CORE_EVENTS = "/api/v1/namespaces/{ns}/events"

TASK_LABEL = "taskmaster.dev/task"
SCHEDULED_TIME_LABEL = "taskmaster.dev/scheduled-time"
ATTEMPT_LABEL = "taskmaster.dev/attempt"
CRONJOB_SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: {status} {body[:300].decode(errors='replace')}")
        self.status = status


def _ssl_context(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    """The server and a TLS context from a kubeconfig naming its files (as kwokctl's do)."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
    tls = ssl.create_default_context(cafile=cluster["cluster"]["certificate-authority"])
    tls.load_cert_chain(user["user"]["client-certificate"], user["user"]["client-key"])
    return cluster["cluster"]["server"], tls


class Api:
    def __init__(self, kubeconfig: Path, connections: int = 128) -> None:
        self.server, tls = _ssl_context(kubeconfig)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=connections),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        expected: Iterable[int] = (200, 201, 202),
    ) -> JSON:
        data = None if body is None else json.dumps(body).encode()
        async with self.session.request(
            method,
            self.server + path,
            params=params,
            data=data,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        ) as response:
            raw = await response.read()
            if response.status not in tuple(expected):
                raise ApiError(method, path, response.status, raw)
            result: JSON = json.loads(raw) if raw else {}
            return result

    async def list(self, path: str, **params: str) -> list[JSON]:
        items: list[JSON] = []
        token = ""
        while True:
            page = await self.request(
                "GET",
                path,
                params={**params, "limit": "500", **({"continue": token} if token else {})},
            )
            items += page.get("items") or []
            token = page.get("metadata", {}).get("continue") or ""
            if not token:
                return items

    async def count(self, path: str, **params: str) -> int:
        """How many objects there are, from a one-item page."""
        page = await self.request("GET", path, params={**params, "limit": "1"})
        items = len(page.get("items") or [])
        remaining: int = page.get("metadata", {}).get("remainingItemCount") or 0
        return items + remaining

    async def delete_collection(self, path: str, **params: str) -> None:
        """Delete every object there; thousands may outlast the API server's request
        timeout (504) or this client's: then ask again, for what is left."""
        while True:
            try:
                await self.request("DELETE", path, params=params, expected=(200, 404))
                return
            except TimeoutError:
                continue
            except ApiError as error:
                if error.status != 504:
                    raise


async def each(
    action: Callable[[Any], Awaitable[object]], items: Iterable[Any], concurrency: int = 48
) -> None:
    """Run `action` on every item, `concurrency` at a time."""
    queue = list(items)
    queue.reverse()

    async def worker() -> None:
        while queue:
            await action(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def watch_lines(api: Api, path: str, params: Mapping[str, str]) -> AsyncIterator[bytes]:
    """The lines of a watch of `path`, one event each, until the server ends it."""
    async with api.session.get(
        api.server + path, params=params, timeout=aiohttp.ClientTimeout(total=None)
    ) as response:
        if response.status != 200:
            raise ApiError("WATCH", path, response.status, await response.read())
        async for line in response.content:
            yield line


@dataclass(frozen=True)
class SeenJob:
    """A Job as its ADDED event found it, with when (time.time()) the event arrived."""

    name: str
    owner: str  # kind/name of the controlling object
    seen_at: float
    # The time the run was scheduled for (unix seconds), as the scheduler labelled it.
    scheduled: float | None
    labels: Mapping[str, str]

    @classmethod
    def from_job(cls, job: JSON, seen_at: float) -> SeenJob:
        metadata = job["metadata"]
        owner: JSON = next(
            (ref for ref in metadata.get("ownerReferences") or () if ref.get("controller")), {}
        )
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        scheduled: float | None = None
        if SCHEDULED_TIME_LABEL in labels:
            scheduled = float(labels[SCHEDULED_TIME_LABEL])
        elif CRONJOB_SCHEDULED_ANNOTATION in annotations:
            stamp = annotations[CRONJOB_SCHEDULED_ANNOTATION]
            scheduled = datetime.fromisoformat(stamp).timestamp()
        return cls(
            name=metadata["name"],
            owner=f"{owner.get('kind')}/{owner.get('name')}",
            seen_at=seen_at,
            scheduled=scheduled,
            labels=labels,
        )


class JobWatch:
    """Notes when each Job of a namespace first appears, to the millisecond.

    Only ADDED events are decoded: the much more frequent MODIFIED ones are
    recognised by their first bytes and skipped, so the watch keeps up with
    thousands of Jobs a second on the same cores as the cluster.
    """

    _ADDED = b'{"type":"ADDED"'
    _BOOKMARK = b'{"type":"BOOKMARK"'

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.path = JOBS.format(ns=namespace)
        self.seen: dict[str, SeenJob] = {}
        self.relisted = 0  # Jobs first seen in a re-list: their time is an upper bound
        self._version = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def since(self, start: float) -> list[SeenJob]:
        return [job for job in self.seen.values() if job.seen_at >= start]

    async def _relist(self) -> None:
        page = await self.api.request("GET", self.path, params={"limit": "1"})
        # Only the version matters: Jobs that exist already are not new.
        self._version = page["metadata"]["resourceVersion"]

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except (aiohttp.ClientError, TimeoutError, ApiError):
                await asyncio.sleep(0.2)
                await self._catch_up()

    async def _catch_up(self) -> None:
        """After a broken watch: Jobs that appeared meanwhile, then watch from now."""
        now = time.time()
        listing = await self.api.request("GET", self.path)
        for job in listing.get("items") or ():
            if job["metadata"]["name"] not in self.seen:
                self.seen[job["metadata"]["name"]] = SeenJob.from_job(job, now)
                self.relisted += 1
        self._version = listing["metadata"]["resourceVersion"]

    async def _watch(self) -> None:
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._version,
            "timeoutSeconds": "3600",
        }
        async for line in watch_lines(self.api, self.path, params):
            now = time.time()
            if line.startswith(self._ADDED):
                job = json.loads(line)["object"]
                name = job["metadata"]["name"]
                if name not in self.seen:
                    self.seen[name] = SeenJob.from_job(job, now)
                self._version = job["metadata"]["resourceVersion"]
            elif line.startswith(self._BOOKMARK):
                self._version = json.loads(line)["object"]["metadata"]["resourceVersion"]
            elif b'"type":"ERROR"' in line[:40]:
                raise ApiError("WATCH", self.path, 410, line)


class _JobEvents:
    """A watch of a namespace's Jobs (by label selector), from now on; each event's line
    goes to `_line`."""

    def __init__(self, api: Api, namespace: str, selector: str = "") -> None:
        self.api = api
        self.path = JOBS.format(ns=namespace)
        self.selector = selector
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        page = await self.api.request("GET", self.path, params={"limit": "1"})
        self._task = asyncio.create_task(self._run(page["metadata"]["resourceVersion"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _line(self, line: bytes) -> None:
        raise NotImplementedError

    async def _run(self, version: str) -> None:
        """Watch from `version`; when the watch ends or breaks, go on from a list of what
        is there (each Job as a MODIFIED event): no Job's end goes unseen."""
        while True:
            params = {
                "watch": "1",
                "labelSelector": self.selector,
                "allowWatchBookmarks": "true",
                "resourceVersion": version,
                "timeoutSeconds": "3600",
            }
            try:
                async for line in watch_lines(self.api, self.path, params):
                    if b'"type":"ERROR"' in line[:40]:
                        raise ApiError("WATCH", self.path, 410, line)
                    self._line(line)
            except (aiohttp.ClientError, TimeoutError, ApiError):
                await asyncio.sleep(0.2)
            version = await self._relist()

    async def _relist(self) -> str:
        params = {"labelSelector": self.selector} if self.selector else {}
        listing = await self.api.request("GET", self.path, params=params)
        for job in listing.get("items") or ():
            self._line(json.dumps({"type": "MODIFIED", "object": job}).encode())
        version: str = listing["metadata"]["resourceVersion"]
        return version


def _ended(job: JSON) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or ()
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


class JobEnds(_JobEvents):
    """Tells when Jobs finish: Complete or Failed. Only events whose bytes mention a
    condition type are decoded."""

    def __init__(self, api: Api, namespace: str, selector: str) -> None:
        super().__init__(api, namespace, selector)
        self._ends: dict[str, asyncio.Future[None]] = {}

    def end_of(self, name: str) -> asyncio.Future[None]:
        """A future set when the Job `name` has finished (ask before creating it)."""
        return self._ends.setdefault(name, asyncio.get_running_loop().create_future())

    def _line(self, line: bytes) -> None:
        if b'"Complete"' not in line and b'"Failed"' not in line:
            return
        job = json.loads(line)["object"]
        if _ended(job):
            end = self._ends.get(job["metadata"]["name"])
            if end is not None and not end.done():
                end.set_result(None)


class JobStates(_JobEvents):
    """Every Job as it goes: how many wait without a pod (the Job controller has not
    started one yet) at any moment, and when each finished."""

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(api, namespace)
        self.waiting = 0
        self.finished: list[float] = []  # time.time() of each Job's end
        self._podless: set[str] = set()
        self._done: set[str] = set()

    def _line(self, line: bytes) -> None:
        event = json.loads(line)
        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
            self._saw(event["type"], event["object"])

    def _saw(self, kind: str, job: JSON) -> None:
        name = job["metadata"]["name"]
        if kind == "DELETED":
            self._podless.discard(name)
            self.waiting = len(self._podless)
            return
        status = job.get("status") or {}
        ended = _ended(job)
        if ended and name not in self._done:
            self._done.add(name)
            self.finished.append(time.time())
        has_pod = ended or bool(
            status.get("active")
            or status.get("ready")
            or status.get("succeeded")
            or status.get("failed")
            or status.get("uncountedTerminatedPods")
        )
        if kind == "ADDED" and not has_pod and name not in self._done:
            self._podless.add(name)
        elif has_pod:
            self._podless.discard(name)
        self.waiting = len(self._podless)
