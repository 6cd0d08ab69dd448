"""The real node (hack/node.py) in tests: its namespaces, images, one-off runs, and the
host's view of a container.

A container counts as real when this machine shows it: its processes sit in
the cgroup named by the container ID the kubelet reports, and their /proc
entries say who runs them, under which seccomp mode and on which mounts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support import namespaces
from tests.support.hack import load_script
from tests.support.tasks import Tasks, finished
from tests.support.wait import until

node = load_script("node")
NAME: str = node.NAME


def images() -> dict[str, str]:
    """The references `make images` built and the node loaded."""
    listing: dict[str, str] = json.loads(node.IMAGES.read_text())
    return listing


def repository_and_tag(reference: str) -> tuple[str, str]:
    repository, tag = reference.rsplit(":", 1)
    return repository, tag


def create_namespace(
    core_v1: client.CoreV1Api, name: str, labels: dict[str, str] | None = None
) -> str:
    """A namespace whose pods all run on the real node (and only there)."""
    return namespaces.create_namespace(
        core_v1, name, labels=labels, annotations=dict(node.NAMESPACE_ANNOTATIONS)
    )


def create_once(tasks: Tasks, spec: dict[str, Any]) -> str:
    """A one-time task, due in two seconds; its name."""
    name = f"run-{uuid.uuid4().hex[:6]}"
    run_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat(timespec="seconds")
    tasks.create(name, {"runAt": run_at, **spec})
    return name


def run_once(tasks: Tasks, spec: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """A one-time task, returned once its run has ended."""
    return tasks.wait(create_once(tasks, spec), finished, timeout=timeout)


@dataclass(frozen=True)
class HostView:
    """A running container as this machine sees it."""

    container_id: str
    pids: tuple[int, ...]

    @classmethod
    def of(cls, pod: client.V1Pod, container: str | None = None) -> HostView:
        statuses = pod.status.container_statuses or []
        status = next(s for s in statuses if container is None or s.name == container)
        container_id = status.container_id.split("://", 1)[1]
        procs = Path("/sys/fs/cgroup/pids") / node.CGROUP / container_id / "cgroup.procs"
        pids = until(
            lambda: tuple(int(pid) for pid in procs.read_text().split()) if procs.exists() else (),
            timeout=10,
            message=f"processes in {procs}",
        )
        return cls(container_id, pids)

    def _status(self, field: str) -> str:
        status = Path(f"/proc/{self.pids[0]}/status").read_text()
        return next(line for line in status.splitlines() if line.startswith(f"{field}:"))

    def uid(self) -> int:
        return int(self._status("Uid").split()[1])

    def seccomp(self) -> int:
        """0 off, 1 strict, 2 filtered (a profile such as RuntimeDefault applies)."""
        return int(self._status("Seccomp").split()[1])

    def cgroup(self) -> str:
        return Path(f"/proc/{self.pids[0]}/cgroup").read_text()

    def mount_options(self, point: str) -> list[str]:
        """The options of the mount at `point` inside the container."""
        for line in Path(f"/proc/{self.pids[0]}/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == point:
                options: list[str] = fields[3].split(",")
                return options
        return []


def pod_until(
    read: Callable[[], client.V1Pod], condition: Callable[[client.V1Pod], bool], message: str
) -> client.V1Pod:
    """The pod `read` returns, once `condition` holds for it."""

    def probe() -> client.V1Pod | None:
        pod = read()
        return pod if condition(pod) else None

    found: client.V1Pod = until(probe, timeout=60, message=message)
    return found


def container_running(pod: client.V1Pod) -> bool:
    statuses = pod.status.container_statuses or []
    return bool(statuses and statuses[0].state.running)


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_of_job(core_v1: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    pods = until(
        lambda: core_v1.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items,
        timeout=60,
        message=f"a pod of Job {job}",
    )
    pod: client.V1Pod = pods[0]
    return pod
