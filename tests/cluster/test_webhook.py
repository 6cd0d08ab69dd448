"""The validating admission webhook against the real API server.

Each test registers its own ValidatingWebhookConfiguration (a unique name,
deleted afterwards) that only applies to the test's namespace, pointing at an
operator on 127.0.0.1 with a self-signed certificate it keeps in a Secret and
publishes as the configuration's caBundle. failurePolicy is Fail, so a webhook
that did not answer would show as a refusal without a field-naming message.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.operator import OperatorProcess, free_port
from tests.support.tasks import CONTAINER, Tasks, job_template
from tests.support.wait import until
from tests.support.webhook import ServedWebhook

CORPUS = Path(__file__).parent.parent / "corpus" / "invalid"
KUBECTL = Path(__file__).parents[2] / ".tools" / "bin" / "kubectl"
# The chart's name for it (templates/webhook.yaml).
WEBHOOK_NAME = "validate.scheduledtasks.taskmaster.dev"
DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request'


@dataclass
class Webhook(ServedWebhook):
    """The test's own configuration, limited to its namespace, and kubectl there."""

    kubeconfig: Path = Path()
    namespace: str = ""

    @property
    def admission(self) -> client.AdmissionregistrationV1Api:
        return client.AdmissionregistrationV1Api(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def apply(self, manifest: str | dict[str, Any]) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        kubectl = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig)]
        return subprocess.run(
            [*kubectl, "apply", "-n", self.namespace, "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


def configuration_body(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate-scheduledtask"},
                "rules": [
                    {
                        "apiGroups": ["taskmaster.dev"],
                        "apiVersions": ["v1"],
                        "resources": ["scheduledtasks"],
                        "operations": ["CREATE", "UPDATE"],
                    }
                ],
                # Never reach into anyone else's namespace on the shared cluster.
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": [namespace],
                        }
                    ]
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }


@pytest.fixture
def webhook(
    api: client.ApiClient, kubeconfig: Path, namespace: str, crds: list[str]
) -> Iterator[Webhook]:
    admission = client.AdmissionregistrationV1Api(api)
    name = f"taskmaster-test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    admission.create_validating_webhook_configuration(configuration_body(name, namespace, port))
    try:
        yield Webhook(
            api, name, "webhook-tls", namespace, port, kubeconfig=kubeconfig, namespace=namespace
        )
    finally:
        admission.delete_validating_webhook_configuration(name)


@pytest.fixture
def served(webhook: Webhook, operators: Callable[..., OperatorProcess]) -> OperatorProcess:
    operator = operators(*webhook.operator_args()).start()
    webhook.wait_serving()
    return operator


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "taskmaster.dev/v1",
        "kind": "ScheduledTask",
        "metadata": {"name": name},
        "spec": spec,
    }


def expectation(path: Path) -> tuple[str, str]:
    outcome, field = path.read_text().splitlines()[0].removeprefix("# expect: ").split(" ", 1)
    return outcome, field


@pytest.mark.usefixtures("served")
def test_every_invalid_example_is_refused_naming_its_field(webhook: Webhook) -> None:
    refused_by_webhook = []
    for path in sorted(CORPUS.glob("*.yaml")):
        outcome, field = expectation(path)

        result = webhook.apply(path.read_text())

        assert result.returncode != 0, (path.name, result.stdout)
        assert field in result.stderr, (path.name, result.stderr)
        if outcome == "invalid":
            # Only the operator's parser can tell: the webhook said so, naming the field.
            assert DENIED in result.stderr, (path.name, result.stderr)
            assert f"{field}: " in result.stderr, (path.name, result.stderr)
            refused_by_webhook.append(path.stem)
    assert {"bad-cron", "never-fires", "bad-zone"} <= set(refused_by_webhook)


def _container_without_image() -> dict[str, Any]:
    template = job_template()
    del template["spec"]["template"]["spec"]["containers"][0]["image"]
    return template


def _misspelt() -> dict[str, Any]:
    template = job_template()
    template["spec"]["backofLimit"] = template["spec"].pop("backoffLimit")
    return template


def _always_restarting() -> dict[str, Any]:
    template = job_template()
    template["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    return template


@pytest.mark.usefixtures("served")
@pytest.mark.parametrize(
    ("workload", "field"),
    [
        (
            {"jobTemplate": _container_without_image()},
            "spec.jobTemplate.spec.template.spec.containers[0].image: Required value",
        ),
        (
            {"jobTemplate": _always_restarting()},
            "spec.jobTemplate.spec.template.spec.restartPolicy: ",
        ),
        (
            {"jobTemplate": _misspelt()},
            "spec.jobTemplate.spec.backofLimit: unknown field",
        ),
        (
            {"task": {"container": {"image": "busybox:1.36", "env": [{"name": "a=b"}]}}},
            "spec.task.container.env[0].name: ",
        ),
    ],
    ids=["no-image", "restart-always", "unknown-field", "bad-env-name"],
)
def test_a_workload_that_is_no_valid_job_is_refused_naming_its_field(
    webhook: Webhook, tasks: Tasks, workload: dict[str, Any], field: str
) -> None:
    result = webhook.apply(manifest("bad-job", {"every": "1m", **workload}))

    assert result.returncode != 0, result.stdout
    assert DENIED in result.stderr, result.stderr
    assert field in result.stderr, result.stderr
    with pytest.raises(ApiException) as missing:
        tasks.get("bad-job")
    assert missing.value.status == 404


def test_a_valid_task_is_admitted_and_an_update_that_breaks_it_refused(
    webhook: Webhook, served: OperatorProcess, tasks: Tasks
) -> None:
    result = webhook.apply(manifest("fine", {"schedule": "0 9 * * *", "task": CONTAINER}))
    assert result.returncode == 0, result.stderr
    template = manifest("templated", {"every": "1h", "jobTemplate": job_template()})
    assert webhook.apply(template).returncode == 0

    broken = webhook.apply(
        manifest(
            "fine", {"schedule": "0 9 * * *", "timeZone": "Europe/Atlantis", "task": CONTAINER}
        )
    )

    assert broken.returncode != 0
    assert DENIED in broken.stderr
    assert "spec.timeZone: 'Europe/Atlantis' is not an IANA time zone" in broken.stderr
    with pytest.raises(ApiException) as refused:
        tasks.patch("fine", {"spec": {"schedule": "0 0 31 4 *"}})
    assert refused.value.status == 422
    assert "spec.schedule: " in str(refused.value.body)
    assert tasks.get("fine")["spec"]["schedule"] == "0 9 * * *"
    tasks.patch("fine", {"spec": {"schedule": "0 10 * * *"}})  # a valid change passes

    # Two creates and a change allowed, two changes denied.
    verdicts = served.metrics()
    assert 'taskmaster_admission_reviews_total{verdict="allowed"} 3.0' in verdicts
    assert 'taskmaster_admission_reviews_total{verdict="denied"} 2.0' in verdicts


def test_a_task_that_got_in_without_the_webhook_can_still_be_relabelled(
    webhook: Webhook, operators: Callable[..., OperatorProcess], tasks: Tasks
) -> None:
    # Created while the webhook cannot answer: failurePolicy Fail would refuse it, so
    # create it before the configuration applies, through a namespace it does not select.
    webhook.admission.patch_validating_webhook_configuration(
        webhook.configuration,
        [
            {
                "op": "replace",
                "path": "/webhooks/0/namespaceSelector/matchExpressions/0/values/0",
                "value": f"{webhook.namespace}-none",
            }
        ],
    )
    tasks.create("slipped", {"schedule": "61 * * * *", "task": CONTAINER})
    webhook.admission.patch_validating_webhook_configuration(
        webhook.configuration,
        [
            {
                "op": "replace",
                "path": "/webhooks/0/namespaceSelector/matchExpressions/0/values/0",
                "value": webhook.namespace,
            }
        ],
    )
    operators(*webhook.operator_args()).start()
    webhook.wait_serving()

    tasks.patch("slipped", {"metadata": {"labels": {"team": "a"}}})

    with pytest.raises(ApiException) as refused:
        tasks.patch("slipped", {"spec": {"schedule": "62 * * * *"}})
    assert "spec.schedule: " in str(refused.value.body)
    tasks.patch("slipped", {"spec": {"schedule": "1 * * * *"}})


def test_replicas_share_one_certificate(
    webhook: Webhook, served: OperatorProcess, operators: Callable[..., OperatorProcess]
) -> None:
    bundle, certificate = webhook.ca_bundle(), webhook.secret_certificate()
    second_port = free_port()

    second = operators(*webhook.operator_args(second_port)).start()
    webhook.wait_serving(second_port)

    assert webhook.served_certificate(second_port) == certificate
    assert webhook.secret_certificate() == certificate
    assert webhook.ca_bundle() == bundle
    assert "issued into Secret" in served.logs()
    assert "issued into Secret" not in second.logs()


def test_a_lost_ca_bundle_is_restored(webhook: Webhook, served: OperatorProcess) -> None:
    bundle = webhook.ca_bundle()
    # As a replace of the configuration (`helm upgrade --force`) leaves it.
    webhook.admission.patch_validating_webhook_configuration(
        webhook.configuration,
        [{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}],
    )

    until(lambda: webhook.ca_bundle() == bundle, timeout=90, message="caBundle restored")


def test_a_dry_run_refused_for_other_reasons_admits_the_task(
    webhook: Webhook, served: OperatorProcess, tasks: Tasks
) -> None:
    # A full quota is the namespace's state, not a fault of the task: admit it.
    webhook.core.create_namespaced_resource_quota(
        webhook.namespace,
        {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}},
    )
    until(
        lambda: (
            webhook.core.read_namespaced_resource_quota("no-jobs", webhook.namespace).status.hard
        ),
        timeout=30,
        message="quota computed",
    )

    result = webhook.apply(manifest("quota", {"every": "1h", "jobTemplate": job_template()}))

    assert result.returncode == 0, result.stderr
    assert tasks.get("quota")
    assert "admitting" in served.logs()
    assert "exceeded quota" in served.logs()


def test_a_backfill_request_over_the_bound_is_refused_at_apply_with_its_count(
    webhook: Webhook, served: OperatorProcess, tasks: Tasks
) -> None:
    assert webhook.apply(manifest("often", {"every": "1s", "task": CONTAINER})).returncode == 0
    too_many = {
        "token": "b1",
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-01T01:00:00Z",  # 3601 times of every 1s
    }

    with pytest.raises(ApiException) as refused:
        tasks.patch(
            "often",
            {"metadata": {"annotations": {"taskmaster.dev/backfill": json.dumps(too_many)}}},
        )

    assert refused.value.status == 422
    assert (
        "metadata.annotations[taskmaster.dev/backfill]: the range holds 3601 runs, more than"
        " the 1000 one backfill may create"
    ) in str(refused.value.body)
    # Other metadata changes of the same task still pass, and so does a request in bounds.
    tasks.patch("often", {"metadata": {"labels": {"team": "a"}}})
    within = {**too_many, "token": "b2", "to": "2026-01-01T00:10:00Z"}
    tasks.patch(
        "often", {"metadata": {"annotations": {"taskmaster.dev/backfill": json.dumps(within)}}}
    )
