"""The chart's operator Deployment, run for real: probes, user, root filesystem, failover."""

from __future__ import annotations

import time

from kubernetes import client

from tests.support import helm
from tests.support.ha import LeaseHolders, assert_every_second_ran_once, every_second
from tests.support.real import NAME, HostView
from tests.support.tasks import Tasks
from tests.support.wait import until


def operator_pods(core_v1: client.CoreV1Api, release: helm.Release) -> list[client.V1Pod]:
    pods: list[client.V1Pod] = core_v1.list_namespaced_pod(
        release.namespace, label_selector=f"app.kubernetes.io/instance={release.name}"
    ).items
    return [pod for pod in pods if not pod.metadata.deletion_timestamp]


def lease_holder(api: client.ApiClient, namespace: str) -> str:
    """The Lease's holder; "" before the first replica has created it."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            "taskmaster-operator", namespace
        )
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    holder: str = lease.spec.holder_identity or ""
    return holder


def test_both_operator_pods_are_ready_through_real_probes_as_65532_on_a_read_only_root(
    api: client.ApiClient, core_v1: client.CoreV1Api, release: helm.Release
) -> None:
    pods = operator_pods(core_v1, release)

    assert len(pods) == 2
    for pod in pods:
        name = pod.metadata.name
        assert pod.spec.node_name == NAME, f"{name} is not on the real node"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready.get("Ready") == "True", f"{name}: {pod.status.conditions}"
        host = HostView.of(pod)
        assert host.uid() == 65532, f"{name} runs as uid {host.uid()}"
        assert "ro" in host.mount_options("/"), f"{name}: root is {host.mount_options('/')}"
        assert host.seccomp() == 2, f"{name}: no seccomp filter (RuntimeDefault)"
        # The chart's emptyDir: the one place it writes.
        assert "rw" in host.mount_options("/tmp"), f"{name}: no writable /tmp"  # noqa: S108
    holder = until(
        lambda: lease_holder(api, release.namespace),
        timeout=30,
        message="a holder of the Lease",
    )
    assert any(holder.startswith(pod.metadata.name) for pod in pods), holder


def test_deleting_the_leader_pod_hands_over_within_lease_plus_2s_without_duplicates_or_gaps(
    api: client.ApiClient,
    core_v1: client.CoreV1Api,
    release: helm.Release,
    real_tasks: Tasks,
    worker_image: str,
) -> None:
    lease_duration = helm.merged_values()["leaderElection"]["leaseDurationSeconds"]
    holders = LeaseHolders(api, release.namespace)
    recorder = real_tasks.recorder()
    real_tasks.create(
        "every-second", every_second({"container": {"image": worker_image, "command": ["true"]}})
    )
    try:
        recorder.wait_for(3, timeout=60)
        leader = until(lambda: lease_holder(api, release.namespace), timeout=30, message="a leader")
        pod = next(p for p in operator_pods(core_v1, release) if leader.startswith(p.metadata.name))

        deleted = time.time()
        core_v1.delete_namespaced_pod(pod.metadata.name, release.namespace)
        taken = until(
            lambda: next(
                (at for at, who in holders.changes if at >= deleted and who and who != leader),
                None,
            ),
            timeout=lease_duration + 30,
            message="another holder of the Lease",
        )
        before = len(recorder.jobs())
        recorder.wait_for(before + 5, timeout=60)
    finally:
        real_tasks.delete("every-second")
        recorder.close()
        holders.close()

    takeover = taken - deleted
    assert takeover <= lease_duration + 2, f"takeover took {takeover:.2f}s"
    assert_every_second_ran_once(recorder, 1)
    print(
        f"real pods: leader pod deleted, takeover in {takeover:.2f}s; {len(recorder.jobs())} runs"
    )
