"""The real node itself: a kubelet's node, not kwok's; off limits to simulated pods; and
listening on nothing but loopback and its own bridge."""

from __future__ import annotations

import re
import subprocess

from kubernetes import client

from tests.support.hack import load_script
from tests.support.real import NAME, node
from tests.support.wait import until

tools = load_script("tools")


def test_the_node_is_registered_by_its_kubelet_over_containerd_and_kwok_leaves_it_alone(
    real_node: str, core_v1: client.CoreV1Api
) -> None:
    found = core_v1.read_node(NAME)
    info = found.status.node_info

    # kwok would report "kwok-<version>" here, and mark the node with its annotation.
    assert info.kubelet_version == tools.KUBERNETES_VERSION
    assert info.container_runtime_version == f"containerd://{tools.CONTAINERD_VERSION[1:]}"
    assert "kwok.x-k8s.io/node" not in (found.metadata.annotations or {})
    addresses = {address.type: address.address for address in found.status.addresses}
    assert addresses["InternalIP"] == node.ADDRESS


def test_pods_of_other_namespaces_never_land_on_it(
    real_node: str, core_v1: client.CoreV1Api, namespace: str
) -> None:
    for index in range(6):
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"simulated-{index}"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        )
        core_v1.create_namespaced_pod(namespace, pod)

    def scheduled() -> list[client.V1Pod] | None:
        pods: list[client.V1Pod] = core_v1.list_namespaced_pod(namespace).items
        return pods if all(pod.spec.node_name for pod in pods) else None

    placed = until(scheduled, timeout=30, message="every pod scheduled")
    assert {pod.spec.node_name for pod in placed} <= {"kwok-node-0", "kwok-node-1"}


def test_the_nodes_processes_listen_on_loopback_and_the_bridge_only(real_node: str) -> None:
    ours = set(node.our_processes())
    listening = subprocess.run(
        ["ss", "-H", "-l", "-n", "-p", "-t", "-u"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()

    seen = []
    for line in listening:
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if not pids & ours:
            continue
        local = line.split()[4]
        address = local.rsplit(":", 1)[0].strip("[]").split("%")[0]
        seen.append(address)
    assert seen, "no listening socket of the node's processes found"
    assert set(seen) <= {"127.0.0.1", "::1", node.ADDRESS}, seen
