"""Stopping the real node leaves this machine as it found it (runs last: it restarts the node)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from kubernetes import client

from tests.support.real import create_namespace, node
from tests.support.wait import until


def node_script(command: str) -> None:
    subprocess.run([sys.executable, str(node.__file__), command], check=True, timeout=200)


@pytest.mark.timeout(900)
def test_stopping_the_node_leaves_no_process_mount_link_rule_cgroup_or_file(
    real_node: str, core_v1: client.CoreV1Api, worker_image: str
) -> None:
    node_script("down")
    baseline = node.footprint()
    node_script("up")
    namespace = create_namespace(core_v1, f"tm-teardown-{uuid.uuid4().hex[:6]}")
    try:
        # A pod behind a Service: a veth, mounts, cgroups and kube-proxy's rules for it.
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name="sleeper", labels={"app": "sleeper"}),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(name="c", image=worker_image, command=["sleep", "300"])
                ]
            ),
        )
        core_v1.create_namespaced_pod(namespace, pod)
        service = client.V1Service(
            metadata=client.V1ObjectMeta(name="sleeper"),
            spec=client.V1ServiceSpec(
                selector={"app": "sleeper"}, ports=[client.V1ServicePort(port=80)]
            ),
        )
        core_v1.create_namespaced_service(namespace, service)
        until(
            lambda: core_v1.read_namespaced_pod("sleeper", namespace).status.phase == "Running",
            timeout=60,
            message="the pod running",
        )
        until(
            lambda: any(f"{namespace}/sleeper" in rule for rule in node.iptables_rules()),
            timeout=30,
            message="kube-proxy's rules for the Service",
        )
        running = node.footprint()
        veths = node.links("master", node.BRIDGE)
        node_script("down")
        after = node.footprint()
    finally:
        node_script("up")
        core_v1.delete_namespace(namespace, propagation_policy="Background")

    # The check sees the node while it runs ...
    for kind in ("processes", "mounts", "cgroups", "files"):
        assert running[kind] != baseline[kind], f"no {kind} of the node seen while it runs"
    assert veths, "no veth on the bridge while a pod runs"
    assert {node.BRIDGE, *veths} <= set(running["links"])
    # ... nothing of it once it is down: what it alone creates is gone outright,
    assert after["processes"] == []
    assert not {node.BRIDGE, *veths} & set(after["links"])
    assert not [rule for rule in after["iptables"] if node.GUARD in rule or "sleeper" in rule]
    # ... and the rest is as before it started.
    for kind, found in after.items():
        assert found == baseline[kind], f"{kind} left behind: {set(found) ^ set(baseline[kind])}"
