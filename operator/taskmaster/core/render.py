"""Job rendering: the batch/v1 Job manifest of one run, as a plain dict."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from taskmaster.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_RUN_NOW,
    ANNOTATION_SCHEDULED_AT,
    API_VERSION,
    KIND,
    LABEL_ATTEMPT,
    LABEL_SCHEDULED_TIME,
    LABEL_TASK,
    LABEL_TRIGGER,
    Run,
    TaskRef,
    job_name,
    task_label,
)
from taskmaster.core.spec import ContainerTask, HttpTask, TaskSpec
from taskmaster.core.times import rfc3339

CONTAINER_NAME = "task"

# A pod lost to a disruption (node loss, eviction, preemption) is replaced by
# the Job itself and does not count as a failed attempt, whatever retry.limit.
DISRUPTIONS_ARE_NOT_FAILURES = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
}


def run_labels(task: TaskRef, run: Run) -> dict[str, str]:
    return {
        LABEL_TASK: task_label(task.name),
        LABEL_SCHEDULED_TIME: str(int(run.scheduled.timestamp())),
        LABEL_ATTEMPT: str(run.attempt),
        LABEL_TRIGGER: run.trigger.value,
    }


def _hardened(container: dict[str, Any]) -> dict[str, Any]:
    """Defaults every container of ours gets; the image decides its user."""
    container.setdefault(
        "securityContext",
        {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    )
    return container


def _job_spec(main: dict[str, Any], **pod: Any) -> dict[str, Any]:
    """The Job of a shorthand: one container, one attempt (retries are the operator's,
    spec.retry, one Job each) and disruptions not counted as failures."""
    return {
        "backoffLimit": 0,
        "podFailurePolicy": copy.deepcopy(DISRUPTIONS_ARE_NOT_FAILURES),
        "template": {"spec": {"restartPolicy": "Never", "containers": [main], **pod}},
    }


def _container_job_spec(container: ContainerTask) -> dict[str, Any]:
    main: dict[str, Any] = {"name": CONTAINER_NAME, "image": container.image}
    if container.command:
        main["command"] = list(container.command)
    if container.args:
        main["args"] = list(container.args)
    if container.env:
        main["env"] = [dict(e) for e in container.env]
    if container.resources is not None:
        main["resources"] = copy.deepcopy(dict(container.resources))
    return _job_spec(_hardened(main))


# The worker touches this file while its action makes progress; the liveness
# probe fails once it is older than the request timeout plus this margin, and
# the kubelet kills the hung attempt (which spec.retry may then retry).
WORKER_RUN_DIR = "/var/run/taskmaster"
HEARTBEAT_FILE = f"{WORKER_RUN_DIR}/heartbeat"
_HEARTBEAT_MARGIN_SECONDS = 30
_DEFAULT_REQUEST_TIMEOUT = 30


def _http_job_spec(http: HttpTask, worker_image: str) -> dict[str, Any]:
    args = ["http", "--url", http.url, "--method", http.method]
    env = []
    for index, (header, value) in enumerate(sorted(http.headers.items())):
        if isinstance(value, Mapping):
            # A value from a Secret: the Job names the variable and the kubelet
            # expands $(NAME), so the value never appears in the API.
            variable = f"TASKMASTER_HEADER_{index}"
            env.append({"name": variable, "valueFrom": copy.deepcopy(dict(value))})
            args += ["--header", f"{header}: $({variable})"]
        else:
            args += ["--header", f"{header}: {value}"]
    if http.body is not None:
        args += ["--body", http.body]
    timeout = http.timeout_seconds or _DEFAULT_REQUEST_TIMEOUT
    args += ["--timeout", str(timeout), "--success-codes", http.success_codes]
    args += ["--heartbeat-file", HEARTBEAT_FILE]
    main: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": worker_image,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "taskmaster-run", "mountPath": WORKER_RUN_DIR}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "livenessProbe": {
            "exec": {
                "command": [
                    "taskmaster-worker",
                    "probe",
                    "--heartbeat-file",
                    HEARTBEAT_FILE,
                    "--max-age",
                    str(timeout + _HEARTBEAT_MARGIN_SECONDS),
                ]
            },
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
    }
    if env:
        main["env"] = env
    main["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return _job_spec(
        main,
        automountServiceAccountToken=False,
        volumes=[{"name": "taskmaster-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
    )


# Every container of a run reads its run from the pod's own metadata (the
# downward API), so a jobTemplate gets them too, unchanged otherwise.
RUN_ENVIRONMENT = {
    "TASKMASTER_SCHEDULED_TIME": f"metadata.annotations['{ANNOTATION_SCHEDULED_AT}']",
    "TASKMASTER_ATTEMPT": f"metadata.labels['{LABEL_ATTEMPT}']",
    "TASKMASTER_TRIGGER": f"metadata.labels['{LABEL_TRIGGER}']",
}


def _with_run_environment(pod_spec: Any) -> None:
    """Add the run's variables to every container that does not set them itself. A
    malformed pod spec is left as it is: the API server refuses the Job, saying why."""
    if not isinstance(pod_spec, dict):
        return
    for kind in ("initContainers", "containers"):
        containers = pod_spec.get(kind)
        for container in containers if isinstance(containers, list) else ():
            if not isinstance(container, dict):
                continue
            if container.get("env") is None:
                container["env"] = []
            env = container["env"]
            if not isinstance(env, list):
                continue
            given = {variable.get("name") for variable in env if isinstance(variable, dict)}
            env += [
                {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                for name, path in RUN_ENVIRONMENT.items()
                if name not in given
            ]


def render_job(
    task: TaskRef, spec: TaskSpec, run: Run, *, worker_image: str | None = None
) -> dict[str, Any]:
    """The Job of `run`: the task's template or shorthand, with the contract's metadata."""
    workload = spec.workload
    template = workload.job_template  # a fresh copy
    if template is not None:
        job_spec = template.get("spec", {})
        metadata = template.get("metadata") or {}
    elif workload.container is not None:
        job_spec, metadata = _container_job_spec(workload.container), {}
    elif workload.http is not None:
        if worker_image is None:
            raise ValueError("task.http needs the operator's --worker-image")
        job_spec, metadata = _http_job_spec(workload.http, worker_image), {}
    else:
        raise ValueError("the spec has no workload")

    labels = run_labels(task, run)
    scheduled_at = rfc3339(run.scheduled)
    if spec.timeout_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.timeout_seconds
    # A template past the schema may hold anything: what is not an object becomes one.
    template = job_spec.get("template")
    if not isinstance(template, dict):
        template = job_spec["template"] = {}
    pod_metadata = template.get("metadata")
    if not isinstance(pod_metadata, dict):
        pod_metadata = template["metadata"] = {}
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    pod_metadata["annotations"] = {
        **(pod_metadata.get("annotations") or {}),
        ANNOTATION_SCHEDULED_AT: scheduled_at,
    }
    _with_run_environment(template.get("spec"))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(task.name, run),
            "namespace": task.namespace,
            "labels": {**(metadata.get("labels") or {}), **labels},
            "annotations": {
                **(metadata.get("annotations") or {}),
                ANNOTATION_SCHEDULED_AT: scheduled_at,
                # A manual run's token names its Job and, for retries, the next one;
                # so does a backfill's, with the scheduled time.
                **(
                    {ANNOTATION_BACKFILL if run.backfill else ANNOTATION_RUN_NOW: run.token}
                    if run.token is not None
                    else {}
                ),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": task.name,
                    "uid": task.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }
