"""The real node (hack/node.py) in tests: its namespaces, images, and the host's view of a pod.

A pod counts as real when this machine shows it: the container's processes sit
in its cgroup (named by the container ID the kubelet reports) and their
/proc entries say who runs them and how their root is mounted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.hack import load_script
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
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
    metadata = client.V1ObjectMeta(
        name=name, annotations=dict(node.NAMESPACE_ANNOTATIONS), labels=labels or {}
    )
    core_v1.create_namespace(client.V1Namespace(metadata=metadata))
    return name


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

    def uid(self) -> int:
        status = Path(f"/proc/{self.pids[0]}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        return int(line.split()[1])

    def mount_options(self, point: str) -> list[str]:
        """The options of the mount at `point` inside the container."""
        for line in Path(f"/proc/{self.pids[0]}/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == point:
                options: list[str] = fields[3].split(",")
                return options
        return []


def pod_of_job(core_v1: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    pods = until(
        lambda: core_v1.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items,
        timeout=60,
        message=f"a pod of Job {job}",
    )
    pod: client.V1Pod = pods[0]
    return pod


def history(task: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = task.get("status", {}).get("history") or []
    return entries


def finished(task: dict[str, Any]) -> bool:
    """The task's latest run ended (its history has an entry with a result)."""
    return any(entry.get("result") for entry in history(task))
