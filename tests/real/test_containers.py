"""`task.container` (and a jobTemplate with a probe) run by runc: exits, kills, the OOM killer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.support.plugin import User
from tests.support.real import (
    NAME,
    HostView,
    container_running,
    create_once,
    pod_of_job,
    pod_until,
    run_once,
)
from tests.support.tasks import Tasks, finished, history
from tests.support.wait import until


def container(image: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"task": {"container": {"image": image, "command": ["sh", "-c", script], **extra}}}


def test_exit_0_succeeds_in_a_container_that_runc_ran(
    core_v1: client.CoreV1Api, real_tasks: Tasks, worker_image: str
) -> None:
    # Long enough to be seen running from the host, then exits 0.
    name = create_once(real_tasks, container(worker_image, "sleep 20"))
    job = until(lambda: real_tasks.jobs(name), timeout=60, message="the run's Job")[0]
    pod = pod_until(
        lambda: pod_of_job(core_v1, real_tasks.namespace, job.metadata.name),
        container_running,
        "the run's container running",
    )
    # A process of this machine, in the cgroup of the container the kubelet reports.
    host = HostView.of(pod)
    cgroup = host.cgroup()
    task = real_tasks.wait(name, finished, timeout=60)

    assert pod.spec.node_name == NAME
    assert host.container_id in cgroup
    entry = history(task)[0]
    assert entry["result"] == "Succeeded", entry


def test_exit_3_fails_with_the_termination_message(real_tasks: Tasks, worker_image: str) -> None:
    script = "echo 'disk full' > /dev/termination-log; exit 3"
    task = run_once(real_tasks, container(worker_image, script))

    entry = history(task)[0]
    assert entry["result"] == "Failed", entry
    assert entry["message"] == "exit code 3 (Error): disk full"


def test_timeout_seconds_kills_the_run_as_timed_out(real_tasks: Tasks, worker_image: str) -> None:
    # A process that ends on SIGTERM, as a well-behaved task does.
    script = "trap 'exit 143' TERM; sleep 300 & wait"
    task = run_once(real_tasks, {**container(worker_image, script), "timeoutSeconds": 3})

    entry = history(task)[0]
    assert entry["result"] == "TimedOut", entry


def test_a_memory_limit_exceeded_is_oom_killed(real_tasks: Tasks, worker_image: str) -> None:
    script = "python -c 'blocks = [bytearray(8 << 20) for _ in range(64)]'"
    limits = {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}
    task = run_once(real_tasks, container(worker_image, script, resources=limits))

    entry = history(task)[0]
    assert entry["result"] == "Failed", entry
    assert "OOMKilled" in entry["message"], entry


def test_a_failing_liveness_probe_kills_the_run(
    core_v1: client.CoreV1Api, real_tasks: Tasks, worker_image: str
) -> None:
    probe = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}
    template = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    # `sleep` ignores SIGTERM: the kubelet's SIGKILL follows at once.
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": worker_image,
                            "command": ["sleep", "300"],
                            "livenessProbe": probe,
                        }
                    ],
                }
            },
        }
    }
    task = run_once(real_tasks, {"jobTemplate": template})

    entry = history(task)[0]
    assert entry["result"] == "Failed", entry
    assert entry["message"].startswith("exit code 137"), entry
    events = core_v1.list_namespaced_event(
        real_tasks.namespace, field_selector="reason=Unhealthy"
    ).items
    assert any(
        "Liveness probe failed" in (event.message or "")
        and event.involved_object.name.startswith(entry["jobName"])
        for event in events
    ), [event.message for event in events]


def test_kubectl_taskmaster_logs_prints_the_containers_output(
    kubeconfig: Path, real_tasks: Tasks, worker_image: str
) -> None:
    word = f"hello-from-runc-{uuid.uuid4().hex[:8]}"
    task = run_once(real_tasks, container(worker_image, f"echo {word}"))
    user = User(kubeconfig, real_tasks.namespace)

    result = user.kubectl("logs", task["metadata"]["name"])

    assert result.code == 0, result.err
    assert word in result.out
