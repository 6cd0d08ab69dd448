"""Lists and watches of the tasks, their Jobs and the Jobs' pods.

Lean on purpose: an event is decoded and handed to the scheduler, nothing
more. Through kopf, each event went through its causes, progress and handler
machinery: during a burst (two or three events per Job) that cost more CPU
than creating the Jobs, on the cores the API server needs; at a start with
10,000 tasks, kopf listed them all a second time and handled each as an event
while the operator was waiting to be ready.

A watch starts from the resourceVersion of its first list, so nothing listed
at start-up comes again as an event; it goes on from the last version seen when
the connection breaks, and lists afresh when the API server no longer has that
version (410 Gone), reporting what vanished meanwhile as deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from taskmaster.shell.kube import ApiError, Kube

logger = logging.getLogger(__name__)

# How long the API server keeps one watch open (seconds); it then ends it and
# the watch goes on with a new request, as client-go's reflectors do.
_SERVER_TIMEOUT = 300
# Wait after a failed list or watch (seconds): doubles up to the cap.
_BACKOFF = (0.5, 30.0)
# What a vanished object is reported with: enough to find its task.
_KEPT_METADATA = ("namespace", "name", "uid", "labels", "ownerReferences")

Handler = Callable[[str | None, Mapping[str, Any]], None]


def _stub(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body["metadata"]
    return {"metadata": {key: metadata[key] for key in _KEPT_METADATA if key in metadata}}


class Watch:
    """One collection (a path such as `/apis/batch/v1/namespaces/ns/jobs`) with a label selector."""

    def __init__(self, kube: Kube, path: str, label_selector: str, handle: Handler) -> None:
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.handle = handle
        # Set once the first list is handled: the cache holds every object there is.
        self.listed = asyncio.Event()
        self.resource_version = ""
        # Every object held, by (namespace, name): to report those gone by a new list.
        self.known: dict[tuple[str, str], dict[str, Any]] = {}

    async def list(self) -> None:
        """Hand every object to `handle` (event type None) and those gone since as DELETED."""
        started = time.monotonic()
        listed, at = {}, ""
        async for items, version in self.kube.list_pages(self.path, self.label_selector):
            at = version
            for item in items:
                metadata = item["metadata"]
                listed[metadata["namespace"], metadata["name"]] = _stub(item)
                self._hand(None, item)
        for key, stub in self.known.items():
            if key not in listed:
                self._hand("DELETED", stub)
        self.known = listed
        self.resource_version = at
        self.listed.set()
        seconds = time.monotonic() - started
        logger.info("listed %d objects of %s in %.1fs", len(listed), self.path, seconds)

    def apply(self, event: Mapping[str, Any]) -> None:
        """Hand one watch event to `handle`; an ERROR event raises its Status as ApiError."""
        kind = event.get("type")
        body = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(body.get("code") or 500), body.get("message") or str(body))
        metadata = body.get("metadata") or {}
        self.resource_version = metadata.get("resourceVersion") or self.resource_version
        if kind == "BOOKMARK":
            return
        key = (metadata["namespace"], metadata["name"])
        if kind == "DELETED":
            self.known.pop(key, None)
        else:
            self.known[key] = _stub(body)
        self._hand(kind, body)

    def _hand(self, kind: str | None, body: Mapping[str, Any]) -> None:
        try:
            self.handle(kind, body)
        except Exception:
            # One object the scheduler cannot take must not stop the watch of all others.
            metadata = body["metadata"]
            logger.exception(
                "%s: %s/%s not handled", self.path, metadata.get("namespace"), metadata.get("name")
            )

    async def run(self) -> None:
        """List, then watch, until cancelled; a failure is retried, never the end."""
        delay = _BACKOFF[0]
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                if not self.resource_version:
                    await self.list()
                async for event in self.kube.watch_collection(
                    self.path, self.label_selector, self.resource_version, _SERVER_TIMEOUT
                ):
                    self.apply(event)
                failure: Exception = ConnectionError("the API server ended the watch")
            except ApiError as error:
                if error.status == 410:
                    # Too old to go on from: list again.
                    logger.info("watching %s: %s; listing again", self.path, error)
                    self.resource_version = ""
                failure = error
            except (aiohttp.ClientError, OSError, EOFError, ValueError) as error:
                failure = error
            if loop.time() - started > _BACKOFF[0]:
                # It ran a while (a watch ends every few minutes): go on at once.
                delay = _BACKOFF[0]
                continue
            # Ended as soon as it began: no request storm against a server doing so.
            logger.warning("watching %s failed (%s); retrying in %.1fs", self.path, failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF[1])
