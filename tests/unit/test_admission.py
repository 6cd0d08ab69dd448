"""The webhook's verdicts: spec problems, the Job to dry-run, Job errors as task fields."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmaster.core.admission import (
    denial,
    job_problems,
    needs_review,
    probe_job,
    task_field,
)
from taskmaster.core.names import LABEL_TASK
from taskmaster.core.spec import FieldError, InvalidSpec, TaskSpec, parse_task

NOW = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
CORPUS = Path(__file__).parents[1] / "corpus" / "invalid"
CONTAINER = {"task": {"container": {"image": "busybox", "command": ["true"]}}}
HTTP = {"task": {"http": {"url": "https://example.com", "headers": {"X": {"secretKeyRef": {}}}}}}
TEMPLATE = {
    "jobTemplate": {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}
            }
        },
    }
}


def task_problems(task: dict[str, Any], *, now: datetime) -> list[FieldError]:
    """What the webhook refuses the task for (parse_task's errors), nothing if it admits it."""
    try:
        parse_task(task, now=now)
    except InvalidSpec as invalid:
        return list(invalid.errors)
    return []


def task(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "taskmaster.dev/v1",
        "kind": "ScheduledTask",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u-1", **metadata},
        "spec": spec,
    }


def spec_of(spec: dict[str, Any]) -> TaskSpec:
    return parse_task(task(spec), now=NOW)


def invalid(field: str, message: str = "Required value") -> dict[str, Any]:
    return {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "code": 422,
        "message": f'Job.batch "t-1" is invalid: {field}: {message}',
        "details": {
            "causes": [{"reason": "FieldValueRequired", "message": message, "field": field}]
        },
    }


# -- what needs a review ---------------------------------------------------------


def test_creations_are_reviewed() -> None:
    assert needs_review("CREATE", None, task({"every": "1m"}))


def test_updates_are_reviewed_when_the_spec_changes() -> None:
    old, new = task({"every": "1m"}), task({"every": "2m"})

    assert needs_review("UPDATE", old, new)


def test_updates_that_leave_the_spec_alone_pass_even_if_it_is_invalid() -> None:
    old = task({"schedule": "61 * * * *"})
    new = task({"schedule": "61 * * * *"}, labels={"a": "b"}, finalizers=[])

    assert not needs_review("UPDATE", old, new)


def test_other_operations_are_not_reviewed() -> None:
    old = task({"every": "1m"})

    assert not needs_review("DELETE", old, old)
    assert needs_review(None, None, old)


# -- spec problems ---------------------------------------------------------------


def test_a_valid_task_has_no_problems() -> None:
    assert (
        task_problems(
            task({"schedule": "0 9 * * *", "timeZone": "Europe/Paris", **CONTAINER}), now=NOW
        )
        == []
    )


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"schedule": "61 * * * *", **CONTAINER}, "spec.schedule"),
        ({"schedule": "0 0 30 2 *", **CONTAINER}, "spec.schedule"),
        ({"schedule": "0 9 * * *", "timeZone": "Mars/Olympus_Mons", **CONTAINER}, "spec.timeZone"),
        ({"every": "500ms", **CONTAINER}, "spec.every"),
        ({"runAt": "next tuesday", **CONTAINER}, "spec.runAt"),
        ({"every": "1m", "task": {"container": {}}}, "spec.task.container.image"),
        ({"every": "1m", "jobTemplate": {"metadata": {}}}, "spec.jobTemplate"),
        ({**CONTAINER}, "spec"),
    ],
)
def test_problems_name_the_field(spec: dict[str, Any], path: str) -> None:
    problems = task_problems(task(spec), now=NOW)

    assert [problem.path for problem in problems] == [path]


def test_every_problem_is_reported_at_once() -> None:
    problems = task_problems(
        task({"schedule": "61 * * * *", "timeZone": "Nowhere/Else", "task": {"container": {}}}),
        now=NOW,
    )

    assert {p.path for p in problems} == {
        "spec.schedule",
        "spec.timeZone",
        "spec.task.container.image",
    }
    assert denial(problems).count("; ") == 2


def test_a_missing_or_malformed_spec_is_a_problem_not_a_crash() -> None:
    assert task_problems({"metadata": {"name": "t"}}, now=NOW)
    assert task_problems({"metadata": {"name": "t"}, "spec": "text"}, now=NOW)
    assert task_problems({}, now=NOW)


def test_the_creation_time_anchors_every_as_the_operator_does() -> None:
    created = task({"every": "1h", **CONTAINER}, creationTimestamp="2026-04-01T00:00:00Z")

    spec = parse_task(created, now=NOW)

    assert spec.timeline.created == datetime(2026, 4, 1, tzinfo=UTC)
    # Without one yet (at CREATE), now stands in, at the whole second the API server
    # will store: scheduled times never hold a fraction.
    stand_in = NOW.replace(microsecond=0)
    assert parse_task(task({"every": "1h", **CONTAINER}), now=NOW).timeline.created == stand_in
    bad_stamp = task({"every": "1h", **CONTAINER}, creationTimestamp="yesterday")
    assert parse_task(bad_stamp, now=NOW).timeline.created == stand_in


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda path: path.stem)
def test_the_corpus_examples_the_parser_sees_are_refused_naming_their_field(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ").split(" ", 1)[1]
    document = yaml.safe_load(path.read_text())
    document["metadata"]["namespace"] = "ns"

    problems = task_problems(document, now=NOW)

    assert problems, path.name
    # "spec.startAt, spec.endAt and spec.maxRuns" or "spec.schedule, ..., spec.every";
    # "exactly one of" is said of `spec`, naming the alternatives.
    named = [part.strip() for part in expected.replace(" and ", ", ").split(",")]
    message = denial(problems)
    assert any(field in message or field.split(".")[-1] in message for field in named), message


# -- the Job to dry-run ----------------------------------------------------------


def test_the_probe_job_is_the_rendered_job_without_its_owner_or_a_run_s_name() -> None:
    spec = spec_of({"every": "1m", **TEMPLATE})

    job = probe_job(task({"every": "1m", **TEMPLATE}), spec, now=NOW, worker_image=None)

    assert job is not None
    assert job["metadata"]["namespace"] == "ns"
    assert "name" not in job["metadata"]  # a run's Job may exist under it: 409 tells nothing
    assert job["metadata"]["generateName"] == "t-1777636800-"
    assert job["metadata"]["labels"]["team"] == "a"
    assert job["metadata"]["labels"][LABEL_TASK] == "t"
    assert "ownerReferences" not in job["metadata"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("m", "x")


def test_a_task_without_a_uid_still_renders() -> None:
    raw = task({"every": "1m", **CONTAINER})
    del raw["metadata"]["uid"]

    job = probe_job(raw, spec_of({"every": "1m", **CONTAINER}), now=NOW, worker_image=None)

    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"


def test_http_tasks_are_dry_run_with_the_worker_image_only() -> None:
    spec = spec_of({"every": "1m", **HTTP})

    assert probe_job(task({"every": "1m", **HTTP}), spec, now=NOW, worker_image=None) is None
    job = probe_job(task({"every": "1m", **HTTP}), spec, now=NOW, worker_image="w:1")
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "w:1"


# -- Job fields back to task fields ----------------------------------------------


@pytest.mark.parametrize(
    ("workload", "job_field", "path"),
    [
        (
            TEMPLATE,
            "spec.template.spec.containers[0].image",
            "spec.jobTemplate.spec.template.spec.containers[0].image",
        ),
        (
            TEMPLATE,
            "spec.template.spec.restartPolicy",
            "spec.jobTemplate.spec.template.spec.restartPolicy",
        ),
        (TEMPLATE, "spec.backoffLimit", "spec.jobTemplate.spec.backoffLimit"),
        (TEMPLATE, "spec", "spec.jobTemplate.spec"),
        (TEMPLATE, "metadata.labels", "spec.jobTemplate.metadata.labels"),
        (TEMPLATE, "metadata.annotations[x]", "spec.jobTemplate.metadata.annotations[x]"),
        (TEMPLATE, "metadata.name", "metadata.name"),
        (TEMPLATE, "metadata.namespace", "metadata.name"),
        (TEMPLATE, "spec.activeDeadlineSeconds", "spec.jobTemplate.spec.activeDeadlineSeconds"),
        (TEMPLATE, "status", None),
        (TEMPLATE, "specification", None),
        (CONTAINER, "spec.template.spec.containers[0].image", "spec.task.container.image"),
        (
            CONTAINER,
            "spec.template.spec.containers[0].command[1]",
            "spec.task.container.command[1]",
        ),
        (CONTAINER, "spec.template.spec.containers[0].args", "spec.task.container.args"),
        (
            CONTAINER,
            "spec.template.spec.containers[0].env[0].name",
            "spec.task.container.env[0].name",
        ),
        (
            CONTAINER,
            "spec.template.spec.containers[0].resources.requests[cpu]",
            "spec.task.container.resources.requests[cpu]",
        ),
        (CONTAINER, "spec.template.spec.containers[0].imagePullPolicy", None),
        (CONTAINER, "spec.template.spec.containers[0].imageX", None),
        (CONTAINER, "spec.template.spec.restartPolicy", None),
        (CONTAINER, "metadata.labels", None),
        (CONTAINER, "metadata.name", "metadata.name"),
        (HTTP, "spec.template.spec.containers[0].env[0].valueFrom", "spec.task.http.headers"),
        (HTTP, "spec.template.spec.containers[0].args", None),
    ],
)
def test_job_fields_map_to_the_task_field_they_come_from(
    workload: dict[str, Any], job_field: str, path: str | None
) -> None:
    assert task_field(job_field, spec_of({"every": "1m", **workload})) == path


def test_the_deadline_is_the_task_s_timeout_when_it_sets_one() -> None:
    spec = spec_of({"every": "1m", "timeoutSeconds": 5, **TEMPLATE})

    assert task_field("spec.activeDeadlineSeconds", spec) == "spec.timeoutSeconds"


def test_a_refused_job_template_names_the_template_field() -> None:
    spec = spec_of({"every": "1m", **TEMPLATE})

    problems = job_problems(invalid("spec.template.spec.containers[0].image"), spec)

    assert problems == [
        FieldError("spec.jobTemplate.spec.template.spec.containers[0].image", "Required value")
    ]


def test_every_cause_is_reported_once() -> None:
    spec = spec_of({"every": "1m", **TEMPLATE})
    status = invalid("spec.template.spec.containers[0].image")
    status["details"]["causes"] += [
        {"message": 'Unsupported value: "Always"', "field": "spec.template.spec.restartPolicy"},
        {"message": "Required value", "field": "spec.template.spec.containers[0].image"},
        "not a cause",
    ]

    problems = job_problems(status, spec)

    assert [p.path for p in problems] == [
        "spec.jobTemplate.spec.template.spec.containers[0].image",
        "spec.jobTemplate.spec.template.spec.restartPolicy",
    ]


def test_causes_without_a_task_field_name_the_rendered_job_s_field() -> None:
    spec = spec_of({"every": "1m", **CONTAINER})

    problems = job_problems(
        invalid("spec.template.spec.containers[0].imagePullPolicy", "bad"), spec
    )

    assert problems == [
        FieldError(
            "spec.task.container",
            "the rendered Job's spec.template.spec.containers[0].imagePullPolicy: bad",
        )
    ]


def test_causes_without_a_field_name_the_workload() -> None:
    spec = spec_of({"every": "1m", **HTTP})
    status = invalid("x")
    status["details"]["causes"] = [{"reason": "FieldValueInvalid", "message": "too big"}]

    assert job_problems(status, spec) == [FieldError("spec.task.http", "too big")]


def test_a_refusal_without_causes_quotes_the_api_server() -> None:
    spec = spec_of({"every": "1m", **TEMPLATE})
    status = invalid("spec.x")
    del status["details"]

    assert job_problems(status, spec) == [
        FieldError("spec.jobTemplate", "the rendered Job is invalid: spec.x: Required value")
    ]
    assert job_problems({}, spec) == [
        FieldError("spec.jobTemplate", "the rendered Job is invalid: the Job is invalid")
    ]


def test_unknown_fields_of_a_strict_dry_run_are_named() -> None:
    spec = spec_of({"every": "1m", **TEMPLATE})
    status = {
        "kind": "Status",
        "reason": "BadRequest",
        "code": 400,
        "message": 'Job in version "v1" cannot be handled as a Job: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].foo", '
        'unknown field "spec.template.spec.containerz"',
    }

    assert job_problems(status, spec) == [
        FieldError("spec.jobTemplate.spec.template.spec.containers[0].foo", "unknown field"),
        FieldError("spec.jobTemplate.spec.template.spec.containerz", "unknown field"),
    ]


def test_a_job_that_cannot_be_decoded_names_the_workload() -> None:
    spec = spec_of({"every": "1m", **CONTAINER})
    status = {
        "reason": "BadRequest",
        "code": 400,
        "message": 'Job in version "v1" cannot be handled as a Job: quantities must match',
    }

    assert job_problems(status, spec) == [
        FieldError("spec.task.container", "the rendered Job is invalid: quantities must match")
    ]
