"""Waiting without sleeping blindly: watches where the API offers them, bounded polls elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import watch

T = TypeVar("T")


def until(probe: Callable[[], T], *, timeout: float, message: str, interval: float = 0.1) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def watch_until(
    list_call: Callable[..., Any],
    predicate: Callable[[Any], bool],
    *,
    timeout: float,
    message: str,
    **list_kwargs: Any,
) -> Any:
    """Return the first object of `list_call` matching `predicate`, now or as it changes.

    Lists once (so an object already in the wanted state is found at once),
    then watches from that list's resourceVersion until the deadline.
    """
    deadline = time.monotonic() + timeout
    listing = list_call(**list_kwargs)
    for item in _field(listing, "items"):
        if predicate(item):
            return item
    resource_version = _field(_field(listing, "metadata"), "resource_version")
    while (remaining := deadline - time.monotonic()) > 0:
        stream = watch.Watch()
        for event in stream.stream(
            list_call,
            resource_version=resource_version,
            timeout_seconds=max(1, int(remaining)),
            _request_timeout=remaining + 5,
            **list_kwargs,
        ):
            item = event["object"]
            resource_version = _field(_field(item, "metadata"), "resource_version")
            if event["type"] != "DELETED" and predicate(item):
                stream.stop()
                return item
    raise TimeoutError(f"timed out after {timeout}s waiting for {message}")


def _field(obj: Any, name: str) -> Any:
    """A field of a client model, or of the plain dict the custom-object API returns."""
    if isinstance(obj, dict):
        first, *rest = name.split("_")
        return obj.get(first + "".join(part.title() for part in rest))
    return getattr(obj, name)
