"""Proof that the local cluster is a real control plane: the API server stores
and versions objects, and the Job, CronJob and garbage-collector controllers
act on them, with kwok running the pods."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.wait import until, watch_until

IMAGE = "registry.k8s.io/pause:3.10"


def job_manifest(name: str, annotations: dict[str, str] | None = None) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image=IMAGE)],
                ),
            ),
        ),
    )


def condition(obj: Any, kind: str) -> Any:
    return next(
        (c for c in (obj.status.conditions or []) if c.type == kind and c.status == "True"),
        None,
    )


def test_job_runs_to_complete(batch_v1: client.BatchV1Api, namespace: str) -> None:
    batch_v1.create_namespaced_job(namespace, job_manifest("ok"))

    job = watch_until(
        batch_v1.list_namespaced_job,
        lambda j: condition(j, "Complete") or condition(j, "Failed"),
        timeout=60,
        message="job ok to finish",
        namespace=namespace,
        field_selector="metadata.name=ok",
    )

    assert condition(job, "Complete"), job.status
    assert job.status.succeeded == 1


def test_failing_pod_fails_the_job(
    batch_v1: client.BatchV1Api, core_v1: client.CoreV1Api, namespace: str
) -> None:
    batch_v1.create_namespaced_job(
        namespace,
        job_manifest(
            "bad",
            {"sim.taskmaster.dev/exit-code": "3", "sim.taskmaster.dev/message": "disk full"},
        ),
    )

    job = watch_until(
        batch_v1.list_namespaced_job,
        lambda j: condition(j, "Complete") or condition(j, "Failed"),
        timeout=60,
        message="job bad to finish",
        namespace=namespace,
        field_selector="metadata.name=bad",
    )

    failed = condition(job, "Failed")
    assert failed, job.status
    assert failed.reason == "BackoffLimitExceeded"
    (pod,) = core_v1.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (3, "disk full")


def test_job_deadline_kills_a_hanging_pod(batch_v1: client.BatchV1Api, namespace: str) -> None:
    job = job_manifest("slow", {"sim.taskmaster.dev/duration": "1h"})
    job.spec.active_deadline_seconds = 2
    batch_v1.create_namespaced_job(namespace, job)

    job = watch_until(
        batch_v1.list_namespaced_job,
        lambda j: condition(j, "Failed"),
        timeout=60,
        message="job slow to fail",
        namespace=namespace,
        field_selector="metadata.name=slow",
    )

    assert condition(job, "Failed").reason == "DeadlineExceeded"


def test_cronjob_controller_creates_a_job(batch_v1: client.BatchV1Api, namespace: str) -> None:
    template = job_manifest("unused")
    cronjob = batch_v1.create_namespaced_cron_job(
        namespace,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="every-minute"),
            spec=client.V1CronJobSpec(
                schedule="* * * * *",
                job_template=client.V1JobTemplateSpec(spec=template.spec),
            ),
        ),
    )
    # The controller counts missed times from status.lastScheduleTime. Moving it
    # two minutes back makes the latest minute a missed run, which the
    # controller starts at once instead of at the next minute boundary.
    two_minutes_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    batch_v1.patch_namespaced_cron_job_status(
        "every-minute",
        namespace,
        {"status": {"lastScheduleTime": two_minutes_ago.isoformat().replace("+00:00", "Z")}},
    )

    job = watch_until(
        batch_v1.list_namespaced_job,
        lambda j: True,
        timeout=60,
        message="a job from the cronjob",
        namespace=namespace,
    )

    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("CronJob", "every-minute", cronjob.metadata.uid)
    assert job.metadata.name.startswith("every-minute-")


def test_deleting_the_owner_deletes_the_job(batch_v1: client.BatchV1Api, namespace: str) -> None:
    owner = batch_v1.create_namespaced_job(namespace, job_manifest("owner"))
    dependent = job_manifest("dependent")
    dependent.metadata.owner_references = [
        client.V1OwnerReference(
            api_version="batch/v1", kind="Job", name="owner", uid=owner.metadata.uid
        )
    ]
    batch_v1.create_namespaced_job(namespace, dependent)

    batch_v1.delete_namespaced_job("owner", namespace, propagation_policy="Background")

    until(
        lambda: not batch_v1.list_namespaced_job(namespace).items,
        timeout=60,
        message="garbage collection of the dependent job",
    )


def test_lease_updates_use_optimistic_concurrency(api: client.ApiClient, namespace: str) -> None:
    leases = client.CoordinationV1Api(api)
    created = leases.create_namespaced_lease(
        namespace,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="leader"),
            spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
        ),
    )
    stale = created.metadata.resource_version

    created.spec.holder_identity = "b"
    updated = leases.replace_namespaced_lease("leader", namespace, created)
    assert updated.spec.holder_identity == "b"
    assert updated.metadata.resource_version != stale

    created.spec.holder_identity = "c"
    created.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        leases.replace_namespaced_lease("leader", namespace, created)
    assert conflict.value.status == 409
    assert leases.read_namespaced_lease("leader", namespace).spec.holder_identity == "b"
