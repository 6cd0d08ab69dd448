"""task.http runs in the worker image under the "restricted" Pod Security Standard;
what a pod says when it ends reaches the task's history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kubernetes import client

from taskmaster.core.times import rfc3339
from tests.support.operator import OperatorProcess
from tests.support.tasks import Tasks, job_template, phase
from tests.support.wait import until


def test_http_tasks_pass_the_restricted_pod_security_standard(
    operators: Callable[..., OperatorProcess],
    tasks: Tasks,
    core_v1: client.CoreV1Api,
    namespace: str,
) -> None:
    core_v1.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    operators("--worker-image", "taskmaster-worker:test").start()
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=2))
    tasks.create("hook", {"runAt": soon, "task": {"http": {"url": "http://127.0.0.1:9/hook"}}})
    # A control: a plain container task asks for nothing restricted needs.
    tasks.create("plain", {"runAt": soon, "task": {"container": {"image": "busybox:1.36"}}})

    hook = tasks.wait("hook", lambda t: phase(t) == "Completed", timeout=60)

    assert hook["status"]["history"][0]["result"] == "Succeeded"
    (job,) = tasks.jobs("hook")
    assert job.spec.template.spec.containers[0].image == "taskmaster-worker:test"
    (plain,) = until(lambda: tasks.jobs("plain"), timeout=30, message="the control's Job")
    refusal = until(
        lambda: [
            e.message
            for e in core_v1.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={plain.metadata.name}"
            ).items
            if e.reason == "FailedCreate"
        ],
        timeout=30,
        message="the control's pod refused",
    )
    assert "violates PodSecurity" in refusal[0]


def test_a_termination_message_becomes_the_history_message(
    operator: OperatorProcess, tasks: Tasks
) -> None:
    soon = rfc3339(datetime.now(UTC) + timedelta(seconds=1))
    result = '{"action":"http","ok":true,"status":200}'
    tasks.create("reports", {"runAt": soon, "jobTemplate": job_template(message=result)})

    task = tasks.wait("reports", lambda t: phase(t) == "Completed", timeout=60)

    (entry,) = task["status"]["history"]
    assert (entry["result"], entry["message"]) == ("Succeeded", result)
