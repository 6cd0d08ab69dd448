"""What the validating admission webhook says about a ScheduledTask, without I/O.

The CRD's schema and CEL rules cannot check cron syntax, time-zone names or
schedules that never fire; the webhook runs the operator's own parser for
those, so apply time and run time agree. Whether the Job a task renders is a
valid Job only the API server knows: the webhook asks it with a server-side
dry-run, and this module maps the field errors of the Job back to the fields
of the task the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskmaster.core.backfill import BadRequest, check, parse_request
from taskmaster.core.names import ANNOTATION_BACKFILL, Run, TaskRef
from taskmaster.core.render import render_job
from taskmaster.core.spec import FieldError, TaskSpec


def needs_review(
    operation: str | None, old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> bool:
    """Whether an admission request changes what the operator would run.

    An update that leaves the spec alone (labels, annotations, finalizers, a
    run-now token) is let through even if the spec is invalid: refusing it
    would keep a task that got in while the webhook was off from ever being
    relabelled or finalized.
    """
    if operation == "CREATE" or old is None:
        return True
    if operation == "UPDATE":
        return old.get("spec") != new.get("spec")
    return False


def new_backfill(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """The backfill annotation the request sets or changes, if it does."""

    def annotation(task: Mapping[str, Any] | None) -> Any:
        metadata = (task or {}).get("metadata") or {}
        return (metadata.get("annotations") or {}).get(ANNOTATION_BACKFILL)

    value = annotation(new)
    return value if isinstance(value, str) and value != annotation(old) else None


def backfill_problems(value: str, spec: TaskSpec, now: datetime) -> list[FieldError]:
    """Why a backfill request would be refused by the operator, naming the annotation."""
    path = f"metadata.annotations[{ANNOTATION_BACKFILL}]"
    try:
        request = parse_request(value)
    except BadRequest as error:
        return [FieldError(path, str(error))]
    _, refusal = check(spec.schedule, request, now)
    return [FieldError(path, refusal)] if refusal is not None else []


def probe_job(
    task: Mapping[str, Any], spec: TaskSpec, *, now: datetime, worker_image: str | None
) -> dict[str, Any] | None:
    """The Job a run of the task would create, to dry-run; None if it cannot be rendered here.

    The ownerReference is left out: it is the operator's, not the user's, and
    checking it would need the owner's uid (absent on some requests) and, where
    OwnerReferencesPermissionEnforcement runs, rights the question does not need.
    """
    if spec.workload.http is not None and worker_image is None:
        return None  # the operator's configuration is at fault, not the task
    metadata = task.get("metadata") or {}
    ref = TaskRef(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
    )
    job = render_job(ref, spec, Run(now.replace(microsecond=0)), worker_image=worker_image)
    del job["metadata"]["ownerReferences"]
    # A run's real Job may hold this name already (409 would say nothing about
    # the template): the dry-run gets a generated one.
    name = job["metadata"].pop("name")
    job["metadata"]["generateName"] = f"{name[:_GENERATED_PREFIX]}-"
    return job


# Room for the API server's five random characters within a 63-character name.
_GENERATED_PREFIX = 57
_CONTAINER = "spec.template.spec.containers[0]"
# The fields of task.container that render_job copies into the Job's only container.
_CONTAINER_FIELDS = ("image", "command", "args", "env", "resources")
_JOB_NAME_FIELDS = ("metadata.name", "metadata.namespace", "metadata.generateName")


def _under(path: str, prefix: str) -> str | None:
    """The rest of `path` below `prefix` ('' for prefix itself), None if not below it."""
    if path == prefix:
        return ""
    if path.startswith(prefix) and path[len(prefix)] in ".[":
        return path[len(prefix) :]
    return None


def task_field(job_field: str, spec: TaskSpec) -> str | None:
    """The task field a field of its rendered Job comes from; None if no single one does."""
    if any(_under(job_field, name) is not None for name in _JOB_NAME_FIELDS):
        return "metadata.name"  # Job names are derived from the task's name
    if spec.timeout_seconds is not None and _under(job_field, "spec.activeDeadlineSeconds") == "":
        return "spec.timeoutSeconds"
    workload = spec.workload
    if workload.job_template is not None:
        sources = {part: f"spec.jobTemplate.{part}" for part in ("metadata", "spec")}
    elif workload.container is not None:
        sources = {
            f"{_CONTAINER}.{name}": f"spec.task.container.{name}" for name in _CONTAINER_FIELDS
        }
    else:
        # Only header values from Secrets become environment variables.
        sources = {f"{_CONTAINER}.env": "spec.task.http.headers"}
    for prefix, source in sources.items():
        rest = _under(job_field, prefix)
        if rest is not None:
            return source if workload.http is not None else f"{source}{rest}"
    return None


def _workload_field(spec: TaskSpec) -> str:
    workload = spec.workload
    if workload.job_template is not None:
        return "spec.jobTemplate"
    if workload.container is not None:
        return "spec.task.container"
    return "spec.task.http"


# The API server's wording before the part that matters, for a Job that is
# invalid (422) or cannot be decoded (400).
_STATUS_PREFIX = re.compile(
    r'^(?:Job(?:\.batch)? "[^"]*" is invalid|Job in version "[^"]*" cannot be handled as a Job): '
)
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


def _causes(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(Job field, message) of each cause the Status gives, in its order."""
    causes = (status.get("details") or {}).get("causes") or []
    found = [
        (str(cause.get("field") or ""), str(cause.get("message") or cause.get("reason") or ""))
        for cause in causes
        if isinstance(cause, Mapping)
    ]
    # Strict decoding names unknown fields only in its message.
    found += [
        (field, "unknown field")
        for field in _UNKNOWN_FIELD.findall(str(status.get("message") or ""))
    ]
    return found


def job_problems(status: Mapping[str, Any], spec: TaskSpec) -> list[FieldError]:
    """The task's fields named by the API server's refusal (a 400 or 422 Status) of its Job."""
    problems: list[FieldError] = []
    for job_field, said in _causes(status):
        path = task_field(job_field, spec) if job_field else None
        message = said or "invalid"
        if path is None:
            # Say which part of the rendered Job it is: the user can still find it.
            path = _workload_field(spec)
            if job_field:
                message = f"the rendered Job's {job_field}: {message}"
        problem = FieldError(path, message)
        if problem not in problems:
            problems.append(problem)
    if not problems:
        text = _STATUS_PREFIX.sub("", str(status.get("message") or "the Job is invalid"))
        problems.append(FieldError(_workload_field(spec), f"the rendered Job is invalid: {text}"))
    return problems


def denial(problems: list[FieldError]) -> str:
    """The webhook's message: every problem, each naming its field."""
    return "; ".join(str(problem) for problem in problems)
