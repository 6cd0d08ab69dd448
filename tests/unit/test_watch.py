"""How a watch event is handed over: the stream's own bookkeeping stays out of the scheduler."""

from __future__ import annotations

from typing import Any, cast

import pytest

from taskmaster.shell.kube import ApiError, collection_paths
from taskmaster.shell.watch import Watch


def _watch() -> tuple[Watch, list[tuple[str | None, str]]]:
    seen: list[tuple[str | None, str]] = []
    watch = Watch(
        cast(Any, None),
        "/apis/batch/v1/jobs",
        "l",
        lambda k, b: seen.append((k, b["metadata"]["name"])),
    )
    return watch, seen


def _job(name: str, version: str) -> dict[str, Any]:
    owner = {"kind": "ScheduledTask", "name": "t", "controller": True}
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "resourceVersion": version,
            "ownerReferences": [owner],
        },
        "spec": {"big": "x" * 100},
    }


def test_events_go_on_from_their_version_and_keep_what_a_deletion_needs() -> None:
    watch, seen = _watch()
    watch.apply({"type": "ADDED", "object": _job("a", "5")})
    watch.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert seen == [("ADDED", "a")]
    assert watch.resource_version == "9"
    # Only what finds the task is kept of an object, not the whole of it.
    assert watch.known == {
        ("ns", "a"): {
            "metadata": {
                "namespace": "ns",
                "name": "a",
                "ownerReferences": [{"kind": "ScheduledTask", "name": "t", "controller": True}],
            }
        }
    }
    watch.apply({"type": "DELETED", "object": _job("a", "12")})
    assert seen[-1] == ("DELETED", "a")
    assert watch.known == {}
    assert watch.resource_version == "12"


def test_an_error_event_raises_its_status() -> None:
    watch, seen = _watch()
    gone = {"kind": "Status", "code": 410, "message": "too old resource version: 1 (40)"}
    with pytest.raises(ApiError) as raised:
        watch.apply({"type": "ERROR", "object": gone})
    assert raised.value.status == 410
    assert "too old resource version" in str(raised.value)
    assert seen == []


def test_an_object_the_handler_fails_on_is_logged_and_the_watch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def handle(kind: str | None, body: Any) -> None:
        if body["metadata"]["name"] == "bad":
            raise KeyError("spec")
        seen.append(body["metadata"]["name"])

    watch = Watch(cast(Any, None), "/apis/batch/v1/jobs", "l", handle)
    for name, version in (("a", "1"), ("bad", "2"), ("b", "3")):
        watch.apply({"type": "ADDED", "object": _job(name, version)})

    assert seen == ["a", "b"]
    assert watch.resource_version == "3"
    assert set(watch.known) == {("ns", "a"), ("ns", "bad"), ("ns", "b")}
    assert "/apis/batch/v1/jobs: ns/bad not handled" in caplog.text


def test_paths_per_namespace_or_cluster_wide() -> None:
    assert collection_paths([], "batch/v1", "jobs") == ["/apis/batch/v1/jobs"]
    assert collection_paths(["a", "b"], "v1", "pods") == [
        "/api/v1/namespaces/a/pods",
        "/api/v1/namespaces/b/pods",
    ]
