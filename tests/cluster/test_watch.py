"""The operator's own list+watch of Jobs: what it hands over, and how it recovers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes import client as sync_client

from taskmaster.core.names import LABEL_TASK
from taskmaster.shell.kube import Kube, LimitedApiClient, load_configuration
from taskmaster.shell.ratelimit import TokenBucket
from taskmaster.shell.watch import Watch
from tests.support.wait import until

Seen = list[tuple[str | None, str]]


def _job(name: str, *, labelled: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {LABEL_TASK: "t"} if labelled else {}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                }
            },
        },
    }


def _watching(
    kubeconfig: Path, namespace: str, scenario: Callable[[Watch, Seen], Awaitable[None]]
) -> None:
    """Run `scenario` with a Watch of the namespace's labelled Jobs, started by it."""

    async def main() -> None:
        configuration = await load_configuration(str(kubeconfig))
        unlimited = LimitedApiClient(configuration, TokenBucket(0, 1), lambda _: None)
        kube = Kube(unlimited, "test")
        seen: Seen = []
        watch = Watch(
            kube,
            f"/apis/batch/v1/namespaces/{namespace}/jobs",
            LABEL_TASK,
            lambda kind, body: seen.append((kind, body["metadata"]["name"])),
        )
        try:
            await scenario(watch, seen)
        finally:
            await kube.close()

    asyncio.run(main())


async def _until_seen(seen: Seen, event: tuple[str | None, str]) -> None:
    await asyncio.to_thread(until, lambda: event in seen, timeout=15, message=f"{event}")


def test_lists_then_watches_only_the_labelled_jobs(
    kubeconfig: Path, namespace: str, batch_v1: sync_client.BatchV1Api
) -> None:
    batch_v1.create_namespaced_job(namespace, _job("before"))
    batch_v1.create_namespaced_job(namespace, _job("unlabelled", labelled=False))

    async def scenario(watch: Watch, seen: Seen) -> None:
        running = asyncio.create_task(watch.run())
        await asyncio.wait_for(watch.listed.wait(), timeout=15)
        assert seen == [(None, "before")]
        await asyncio.to_thread(batch_v1.create_namespaced_job, namespace, _job("after"))
        await _until_seen(seen, ("ADDED", "after"))
        await asyncio.to_thread(batch_v1.delete_namespaced_job, "after", namespace)
        await _until_seen(seen, ("DELETED", "after"))
        running.cancel()

    _watching(kubeconfig, namespace, scenario)


def test_a_new_list_reports_what_vanished_since_the_last(
    kubeconfig: Path, namespace: str, batch_v1: sync_client.BatchV1Api
) -> None:
    # What the watch does when the API server no longer has its resourceVersion
    # (410 Gone after a long break): list again; a Job deleted meanwhile is
    # reported as deleted, or its task would wait on it forever.
    batch_v1.create_namespaced_job(namespace, _job("present"))

    async def scenario(watch: Watch, seen: Seen) -> None:
        vanished = {"metadata": {"namespace": namespace, "name": "vanished"}}
        watch.known = {(namespace, "vanished"): vanished}
        await watch.list()
        assert seen == [(None, "present"), ("DELETED", "vanished")]
        assert set(watch.known) == {(namespace, "present")}
        running = asyncio.create_task(watch.run())  # goes on from the new list
        await asyncio.to_thread(batch_v1.create_namespaced_job, namespace, _job("later"))
        await _until_seen(seen, ("ADDED", "later"))
        assert seen.count((None, "present")) == 1
        running.cancel()

    _watching(kubeconfig, namespace, scenario)
