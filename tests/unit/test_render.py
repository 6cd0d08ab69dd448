"""Job names and Job rendering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from taskmaster.core.names import Run, TaskRef, Trigger, job_name, short_name, task_label
from taskmaster.core.render import render_job
from taskmaster.core.spec import parse_spec

CREATED = datetime(2026, 5, 1, tzinfo=UTC)
SCHEDULED = datetime(2026, 5, 1, 12, 0, 5, tzinfo=UTC)  # 1777636805
TASK = TaskRef("team-a", "nightly-report", "uid-1")


def spec_of(raw: dict[str, Any]) -> Any:
    return parse_spec(raw, namespace=TASK.namespace, name=TASK.name, created=CREATED)


def test_job_names_are_deterministic_per_time_and_attempt() -> None:
    assert job_name("nightly-report", Run(SCHEDULED)) == "nightly-report-1777636805"
    assert job_name("nightly-report", Run(SCHEDULED, attempt=2)) == "nightly-report-1777636805-2"


def test_manual_runs_are_named_by_their_token() -> None:
    first = job_name("t", Run(SCHEDULED, trigger=Trigger.MANUAL, token="abc"))
    later = job_name(
        "t", Run(datetime(2027, 1, 1, tzinfo=UTC), trigger=Trigger.MANUAL, token="abc")
    )

    assert first == later
    assert first.startswith("t-m")
    assert first != job_name("t", Run(SCHEDULED, trigger=Trigger.MANUAL, token="abd"))


@pytest.mark.parametrize("length", [47, 48, 63, 100, 253])
def test_long_task_names_fit_and_never_collide(length: int) -> None:
    one = "a" * length
    other = "a" * (length - 1) + "b"
    longest = Run(SCHEDULED, attempt=999, trigger=Trigger.MANUAL, token="x")

    names = {job_name(one, longest), job_name(other, longest)}

    assert len(names) == 2
    assert all(len(n) <= 63 for n in names)
    assert len(task_label(one)) <= 63


def test_short_names_do_not_end_in_punctuation() -> None:
    name = "a" * 37 + "-.-" + "b" * 30

    assert short_name(name)[-9] == "-"
    assert short_name(name)[-10] == "a"


def test_container_task_job() -> None:
    spec = spec_of(
        {
            "every": "1m",
            "timeoutSeconds": 30,
            "task": {
                "container": {
                    "image": "busybox:1.36",
                    "command": ["sh", "-c"],
                    "args": ["echo hi"],
                    "env": [{"name": "A", "value": "b"}],
                    "resources": {"requests": {"cpu": "10m"}},
                }
            },
        }
    )

    job = render_job(TASK, spec, Run(SCHEDULED, trigger=Trigger.CATCH_UP))

    assert job["metadata"]["name"] == "nightly-report-1777636805"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["labels"] == {
        "taskmaster.dev/task": "nightly-report",
        "taskmaster.dev/scheduled-time": "1777636805",
        "taskmaster.dev/attempt": "1",
        "taskmaster.dev/trigger": "catch-up",
    }
    assert job["metadata"]["annotations"] == {"taskmaster.dev/scheduled-at": "2026-05-01T12:00:05Z"}
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "taskmaster.dev/v1",
            "kind": "ScheduledTask",
            "name": "nightly-report",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"]["activeDeadlineSeconds"] == 30
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["taskmaster.dev/task"] == "nightly-report"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "busybox:1.36"
    assert container["command"] == ["sh", "-c"]
    assert container["args"] == ["echo hi"]
    assert container["env"][0] == {"name": "A", "value": "b"}
    assert container["resources"] == {"requests": {"cpu": "10m"}}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    }


def test_job_template_is_used_as_is_with_metadata_merged() -> None:
    template = {
        "metadata": {"labels": {"team": "a", "taskmaster.dev/task": "spoofed"}},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"annotations": {"sim.taskmaster.dev/duration": "1s"}},
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "x", "image": "y"}]},
            },
        },
    }
    spec = spec_of({"schedule": "* * * * *", "jobTemplate": template})

    job = render_job(TASK, spec, Run(SCHEDULED))

    assert job["metadata"]["labels"]["team"] == "a"
    assert job["metadata"]["labels"]["taskmaster.dev/task"] == "nightly-report"
    assert job["spec"]["backoffLimit"] == 2
    assert "activeDeadlineSeconds" not in job["spec"]
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "sim.taskmaster.dev/duration": "1s",
        "taskmaster.dev/scheduled-at": "2026-05-01T12:00:05Z",
    }
    (container,) = pod["spec"]["containers"]
    assert {k: v for k, v in container.items() if k != "env"} == {"name": "x", "image": "y"}
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert template["metadata"]["labels"]["taskmaster.dev/task"] == "spoofed", "input not mutated"


def test_http_task_job_runs_the_worker_hardened() -> None:
    spec = spec_of(
        {
            "every": "5m",
            "task": {
                "http": {
                    "url": "https://example.test/hook",
                    "method": "POST",
                    "headers": {
                        "Authorization": {"secretKeyRef": {"name": "hook", "key": "token"}},
                        "X-Plain": "1",
                    },
                    "body": "{}",
                    "timeoutSeconds": 5,
                }
            },
        }
    )

    job = render_job(TASK, spec, Run(SCHEDULED), worker_image="worker:1")

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "worker:1"
    assert container["args"][:5] == [
        "http",
        "--url",
        "https://example.test/hook",
        "--method",
        "POST",
    ]
    assert "Authorization: $(TASKMASTER_HEADER_0)" in container["args"]
    assert "X-Plain: 1" in container["args"]
    assert container["env"][0] == {
        "name": "TASKMASTER_HEADER_0",
        "valueFrom": {"secretKeyRef": {"name": "hook", "key": "token"}},
    }
    assert container["securityContext"]["runAsNonRoot"] is True
    assert "--heartbeat-file" in container["args"]
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["taskmaster-worker", "probe"]
    assert probe[-2:] == ["--max-age", "35"]  # the 5 s request timeout plus the margin
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    with pytest.raises(ValueError, match="--worker-image"):
        render_job(TASK, spec, Run(SCHEDULED))


def run_variables(container: dict[str, Any]) -> dict[str, str]:
    return {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container.get("env", [])
        if e["name"].startswith("TASKMASTER_") and "fieldRef" in e.get("valueFrom", {})
    }


def test_every_container_of_a_run_knows_its_scheduled_time_attempt_and_trigger() -> None:
    template = {
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [{"name": "setup", "image": "y"}],
                    "containers": [
                        {"name": "main", "image": "y", "env": [{"name": "KEEP", "value": "1"}]},
                        {"name": "side", "image": "y"},
                    ],
                }
            }
        }
    }
    spec = spec_of({"schedule": "* * * * *", "jobTemplate": template})

    job = render_job(TASK, spec, Run(SCHEDULED, attempt=2, trigger=Trigger.RETRY))

    pod = job["spec"]["template"]
    expected = {
        "TASKMASTER_SCHEDULED_TIME": "metadata.annotations['taskmaster.dev/scheduled-at']",
        "TASKMASTER_ATTEMPT": "metadata.labels['taskmaster.dev/attempt']",
        "TASKMASTER_TRIGGER": "metadata.labels['taskmaster.dev/trigger']",
    }
    containers = pod["spec"]["initContainers"] + pod["spec"]["containers"]
    assert [run_variables(c) for c in containers] == [expected] * 3
    assert containers[1]["env"][0] == {"name": "KEEP", "value": "1"}
    # What the fields point at: the pod's own metadata says this run.
    assert pod["metadata"]["annotations"]["taskmaster.dev/scheduled-at"] == "2026-05-01T12:00:05Z"
    assert pod["metadata"]["labels"]["taskmaster.dev/attempt"] == "2"
    assert pod["metadata"]["labels"]["taskmaster.dev/trigger"] == "retry"


def test_a_variable_the_template_sets_itself_is_left_as_it_is() -> None:
    own = {"name": "TASKMASTER_TRIGGER", "value": "mine"}
    template = {
        "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "y", "env": [own]}]}}}
    }
    spec = spec_of({"schedule": "* * * * *", "jobTemplate": template})

    (container,) = render_job(TASK, spec, Run(SCHEDULED))["spec"]["template"]["spec"]["containers"]

    assert [e for e in container["env"] if e["name"] == "TASKMASTER_TRIGGER"] == [own]
    assert set(run_variables(container)) == {"TASKMASTER_SCHEDULED_TIME", "TASKMASTER_ATTEMPT"}


@pytest.mark.parametrize(
    "pod",
    [
        None,
        {"spec": None},
        {"metadata": [], "spec": {"containers": "x"}},
        {"spec": {"containers": [{"name": "a", "env": "x"}, None]}},
        {"spec": {"initContainers": [{"name": "a", "env": None}], "containers": None}},
    ],
)
def test_a_malformed_template_past_the_schema_renders_for_the_api_server_to_judge(
    pod: Any,
) -> None:
    spec = spec_of({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": pod}}})

    job = render_job(TASK, spec, Run(SCHEDULED))

    assert job["spec"]["template"]["metadata"]["labels"]["taskmaster.dev/attempt"] == "1"
