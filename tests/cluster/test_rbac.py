"""The chart's RBAC is exactly enough: the operator runs on the chart's identity alone.

Each test installs the chart (`helm install`) next to the test's namespace,
mints a token for the chart's ServiceAccount and runs the operator process
with that token only. Core behaviours of the suite are re-run here as they
are (imported below, so pytest collects them in this module, where the
`operators` fixture is the chart identity's), once with `watchNamespaces`
(Roles) and once cluster-wide (ClusterRoles). Afterwards the API server's
audit log must show that the identity made requests and none was denied.

With `watchNamespaces` the chart's validating webhook is on too, as the chart
would run it but for where the API server finds it: `webhook.url` points at the
test's operator process on 127.0.0.1, `failurePolicy: Fail`, the chart's
namespaceSelector keeping it to the test's namespace. The operator gets the
webhook flags the chart gives its pods (the Secret, the configuration) and
makes its certificate, fills `caBundle` and dry-runs Jobs on the chart's
identity alone.

In the cluster-wide mode the operator process still watches the test's
namespace only: a cluster-wide operator on a shared cluster would act on
every other test's tasks. The rules it exercises are the same ClusterRole's.

A second group shows what people get: a user bound to `<fullname>-edit` in one
namespace manages tasks there and nowhere else, and the built-in view, edit
and admin roles include the chart's rules.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster.test_failures import (
    test_a_disrupted_pod_is_replaced_without_failing_the_run,
    test_a_failing_run_is_retried_with_backoff_then_fails,
)
from tests.cluster.test_operator import (
    test_every_task_runs_on_time_with_the_contract_names,
    test_history_limits_delete_old_jobs_and_deleting_the_task_deletes_the_rest,
    test_invalid_specs_that_get_in_are_reported_and_others_keep_running,
    test_replace_deletes_the_running_job,
    test_restart_never_duplicates_and_catches_up_by_policy,
    test_run_now_runs_once_per_token,
)
from tests.support import helm
from tests.support.operator import OperatorProcess, free_port
from tests.support.tasks import CONTAINER, GROUP, PLURAL, VERSION, Tasks, job_template
from tests.support.wait import until
from tests.support.webhook import ServedWebhook

pytestmark = pytest.mark.skipif(helm.helm_missing() is not None, reason=str(helm.helm_missing()))

# Re-run under the chart's identity: every API call the operator makes (tasks,
# status, Jobs, pods, Events, the Lease taken, released and taken over).
REPLAYED = (
    test_every_task_runs_on_time_with_the_contract_names,
    test_replace_deletes_the_running_job,
    test_run_now_runs_once_per_token,
    test_restart_never_duplicates_and_catches_up_by_policy,
    test_invalid_specs_that_get_in_are_reported_and_others_keep_running,
    test_history_limits_delete_old_jobs_and_deleting_the_task_deletes_the_rest,
    test_a_failing_run_is_retried_with_backoff_then_fails,
    test_a_disrupted_pod_is_replaced_without_failing_the_run,
)

FORBIDDEN_IN_LOG = re.compile(r"\b403\b|[Ff]orbidden")

# The mode with the chart's webhook on. Only there: the chart's configuration
# of a cluster-wide install has no namespaceSelector, so with failurePolicy
# Fail it would validate (and, while the test's operator is down, refuse)
# every other test's tasks on the shared cluster.
WEBHOOK_MODE = "watch-namespaces"
CHART_WEBHOOK = "validate.scheduledtasks.taskmaster.dev"
DENIED = f'admission webhook "{CHART_WEBHOOK}" denied the request'


def _new_namespace(core_v1: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"taskmaster.dev/test": "rbac"})
        )
    )
    return name


@pytest.fixture
def release_namespace(core_v1: client.CoreV1Api) -> Iterator[str]:
    """The namespace the chart is installed in (not the tasks' namespace)."""
    name = _new_namespace(core_v1, "tm-rel")
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(params=["watch-namespaces", "cluster-wide"])
def chart_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def webhook_port() -> int:
    """Where the test's operator serves the chart's webhook (WEBHOOK_MODE only)."""
    return free_port()


@pytest.fixture
def release(
    kubeconfig: Path,
    namespace: str,
    release_namespace: str,
    crds: list[str],
    chart_mode: str,
    *,
    webhook_port: int,
    request: pytest.FixtureRequest,
) -> Iterator[helm.Release]:
    webhook = chart_mode == WEBHOOK_MODE
    if (
        webhook
        and request.function is test_invalid_specs_that_get_in_are_reported_and_others_keep_running
    ):
        pytest.skip(
            "the webhook (failurePolicy Fail) refuses the invalid specs this test lets in: "
            "test_the_webhook_runs_on_the_chart_identity shows that; the cluster-wide "
            "mode runs this test"
        )
    watched = [namespace] if chart_mode == "watch-namespaces" else []
    installed = helm.Release(
        kubeconfig,
        helm.unique_release("rbac"),
        release_namespace,
        helm.install_values(
            watch_namespaces=watched,
            webhook=webhook,
            # The base URL: the chart appends /validate-scheduledtask.
            webhook_url=f"https://127.0.0.1:{webhook_port}",
            failure_policy="Fail",
        ),
    ).install()
    yield installed
    installed.uninstall()


@pytest.fixture
def audit(kubeconfig: Path) -> helm.AuditLog | None:
    """The cluster's audit log from now on, when this is the local cluster."""
    path = helm.audit_log_path(kubeconfig)
    return helm.AuditLog(path) if path.exists() else None


@pytest.fixture
def chart_identity(kubeconfig: Path, release: helm.Release, tmp_path: Path) -> Path:
    """A kubeconfig holding nothing but a token of the chart's ServiceAccount."""
    token = helm.mint_token(kubeconfig, release.namespace, release.service_account)
    return helm.token_kubeconfig(kubeconfig, token, tmp_path / "chart-identity.kubeconfig")


def check_nothing_denied(
    release: helm.Release,
    audit: helm.AuditLog | None,
    processes: list[OperatorProcess],
    namespace: str,
) -> str:
    """Fail if the chart's identity was refused anything; a summary of what it did."""
    if audit is None:
        # Another cluster: no audit log to read, but a refusal shows in the log.
        for process in processes:
            refused = [
                line for line in process.logs().splitlines() if FORBIDDEN_IN_LOG.search(line)
            ]
            assert not refused, f"the operator was refused: {refused[:5]}"
        return "no audit log on this cluster: checked the operator logs for 403s"
    events = until(
        lambda: audit.events(release.username),
        timeout=10,
        message=f"audit events of {release.username}",
    )
    denied = helm.denied(events)
    assert not denied, f"the API server denied {release.username}: {denied}"
    counts = helm.summary(
        events, {namespace: "tasks namespace", release.namespace: "release namespace"}
    )
    return "\n".join(f"{count:6d}  {request}" for request, count in sorted(counts.items()))


class ServingOperator(OperatorProcess):
    """An operator serving the chart's webhook: started once the API server can call it.

    With failurePolicy Fail, a task written before the operator has published
    its CA in the configuration (or before it serves) would be refused.
    """

    def __init__(self, webhook: ServedWebhook, *args: Any) -> None:
        super().__init__(*args)
        self.webhook = webhook

    def start(self) -> ServingOperator:
        super().start()
        self.webhook.wait_serving()
        return self


@pytest.fixture
def chart_webhook(
    api: client.ApiClient, release: helm.Release, chart_mode: str, webhook_port: int
) -> ServedWebhook | None:
    if chart_mode != WEBHOOK_MODE:
        return None
    # The chart's names: its configuration, and the Secret next to the Lease.
    secret = f"{release.fullname}-webhook-tls"
    return ServedWebhook(api, release.fullname, secret, release.namespace, webhook_port)


@pytest.fixture
def operators(
    chart_identity: Path,
    namespace: str,
    release: helm.Release,
    chart_webhook: ServedWebhook | None,
    *,
    audit: helm.AuditLog | None,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Operator processes on the chart's identity, their Lease in the release namespace.

    With the chart's webhook on, each serves it as the chart's pods would, on
    the one port the configuration names: the replayed tests run one operator
    at a time.
    """
    started: list[OperatorProcess] = []

    def make(*args: str) -> OperatorProcess:
        log = chart_identity.parent / f"operator-{len(started)}.log"
        base = ["--namespace", namespace, "--lease-namespace", release.namespace, *args]
        process = (
            OperatorProcess(chart_identity, log, base)
            if chart_webhook is None
            else ServingOperator(
                chart_webhook, chart_identity, log, [*base, *chart_webhook.operator_args()]
            )
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
        request.node.add_report_section(
            "teardown", f"log of {process.log_path.name}", process.logs()
        )
    if started:
        report = check_nothing_denied(release, audit, started, namespace)
        request.node.add_report_section("teardown", f"requests of {release.username}", report)


def test_the_chart_identity_is_the_one_acting_and_is_never_denied(
    operator: OperatorProcess,
    tasks: Tasks,
    release: helm.Release,
    audit: helm.AuditLog | None,
    namespace: str,
) -> None:
    """The check is real: requests of the chart's identity are in the log, by kind."""
    tasks.create("proof", {"every": "1s", "task": CONTAINER})
    tasks.wait("proof", lambda t: t.get("status", {}).get("succeededRuns", 0) >= 2)
    operator.stop()
    if audit is None:
        pytest.skip("no audit log on this cluster (the 403 check of the fixture still ran)")
    seen = {helm.describe(event).split(" (")[0] for event in audit.events(release.username)}
    for needed in (
        "create batch/jobs",
        "list batch/jobs",
        "watch batch/jobs",
        "list core/pods",
        "watch core/pods",
        "list taskmaster.dev/scheduledtasks",
        "watch taskmaster.dev/scheduledtasks",
        "create events.k8s.io/events",
        "create coordination.k8s.io/leases",
    ):
        assert any(request.startswith(needed) for request in seen), (needed, sorted(seen))
    assert any(request.startswith("patch taskmaster.dev/scheduledtasks/status") for request in seen)
    assert "update coordination.k8s.io/leases taskmaster-operator" in seen


def test_the_operator_rules_are_bound_where_the_mode_says(
    release: helm.Release, chart_mode: str, namespace: str, api: client.ApiClient
) -> None:
    """Roles in watched namespaces, a ClusterRole otherwise; the Lease rules at home."""
    rbac = client.RbacAuthorizationV1Api(api)
    roles = [r.metadata.name for r in rbac.list_namespaced_role(namespace).items]
    runtime = rbac.read_namespaced_role(f"{release.fullname}-runtime", release.namespace)
    if chart_mode == "watch-namespaces":
        assert release.fullname in roles
        with pytest.raises(ApiException) as missing:
            rbac.read_cluster_role(release.fullname)
        assert missing.value.status == 404
    else:
        assert release.fullname not in roles
        assert rbac.read_cluster_role(release.fullname).rules
    # The webhook's Secret next to the Lease; its configuration, cluster-scoped, by name.
    webhook = chart_mode == WEBHOOK_MODE
    expected = {("leases",), ("secrets",)} if webhook else {("leases",)}
    assert {tuple(rule.resources) for rule in runtime.rules} == expected
    if webhook:
        (rule,) = rbac.read_cluster_role(f"{release.fullname}-webhook").rules
        assert rule.resource_names == [release.fullname]


def test_the_chart_identity_can_do_nothing_else(
    chart_identity: Path, release: helm.Release, chart_mode: str, other_namespace: str
) -> None:
    identity = config.new_client_from_config(config_file=str(chart_identity))
    core, batch = client.CoreV1Api(identity), client.BatchV1Api(identity)
    custom = client.CustomObjectsApi(identity)
    assert _status_code(lambda: core.list_namespaced_secret(release.namespace)) == 403
    # The webhook's Secret and configuration (WEBHOOK_MODE) are the only ones it may touch.
    assert _status_code(lambda: core.read_namespaced_secret("other", release.namespace)) == 403
    assert _status_code(
        lambda: client.AdmissionregistrationV1Api(identity).read_validating_webhook_configuration(
            f"{release.fullname}-other"
        )
    ) == 403  # fmt: skip
    assert _status_code(lambda: core.list_namespaced_config_map(release.namespace)) == 403
    assert _status_code(core.list_namespace) == 403
    assert _status_code(
        lambda: client.CoordinationV1Api(identity).read_namespaced_lease("other", release.namespace)
    ) == 403  # fmt: skip
    assert _status_code(lambda: custom.create_namespaced_custom_object(
        GROUP, VERSION, other_namespace, PLURAL, {"apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ScheduledTask", "metadata": {"name": "x"}, "spec": {}})) == 403  # fmt: skip
    elsewhere = _status_code(lambda: batch.list_namespaced_job(other_namespace))
    assert elsewhere == (403 if chart_mode == "watch-namespaces" else 200)


def test_only_the_cluster_wide_identity_lists_and_watches_across_namespaces(
    chart_identity: Path, chart_mode: str
) -> None:
    """The calls a cluster-wide operator makes, which the replayed tests (one namespace) do not."""
    identity = config.new_client_from_config(config_file=str(chart_identity))
    custom, batch = client.CustomObjectsApi(identity), client.BatchV1Api(identity)
    core = client.CoreV1Api(identity)
    selector = "taskmaster.dev/task"
    calls: list[Callable[[], object]] = [
        lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1),
        lambda: batch.list_job_for_all_namespaces(label_selector=selector, limit=1),
        lambda: core.list_pod_for_all_namespaces(label_selector=selector, limit=1),
        lambda: custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, watch=True, timeout_seconds=1, _preload_content=False
        ).release_conn(),
    ]

    codes = [_status_code(call) for call in calls]

    assert codes == [200 if chart_mode == "cluster-wide" else 403] * len(calls)


def _apply(kubeconfig: Path, namespace: str, name: str, spec: dict[str, Any]) -> str:
    """`kubectl apply` of a task: the error output, or "" if it was admitted."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ScheduledTask",
        "metadata": {"name": name},
        "spec": spec,
    }
    try:
        helm.kubectl(
            kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest)
        )
    except RuntimeError as refused:
        return str(refused)
    return ""


@pytest.mark.parametrize("chart_mode", [WEBHOOK_MODE], indirect=True)
def test_the_webhook_runs_on_the_chart_identity(
    operator: OperatorProcess,
    chart_webhook: ServedWebhook,
    tasks: Tasks,
    kubeconfig: Path,
    *,
    namespace: str,
    release: helm.Release,
    audit: helm.AuditLog | None,
) -> None:
    """Certificate, caBundle and Job dry-runs with the chart's rights; refusals name the field."""
    # The operator made the Secret the chart names, and published its CA (`operator` waited).
    data = chart_webhook.secret_data()
    assert data is not None
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert chart_webhook.ca_bundle() == data["ca.crt"]

    bad_cron = _apply(
        kubeconfig, namespace, "bad-cron", {"schedule": "61 * * * *", "task": CONTAINER}
    )
    bad_zone = _apply(
        kubeconfig, namespace, "bad-zone",
        {"schedule": "0 * * * *", "timeZone": "Mars/Olympus", "task": CONTAINER},
    )  # fmt: skip
    restarting = job_template()
    restarting["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    bad_job = _apply(kubeconfig, namespace, "bad-job", {"every": "1m", "jobTemplate": restarting})
    admitted = _apply(kubeconfig, namespace, "fine", {"every": "1s", "task": CONTAINER})

    assert DENIED in bad_cron, bad_cron
    assert "spec.schedule: '61 * * * *' is not a valid cron" in bad_cron
    assert DENIED in bad_zone, bad_zone
    assert "spec.timeZone: 'Mars/Olympus' is not an IANA" in bad_zone
    assert DENIED in bad_job, bad_job
    assert "spec.jobTemplate.spec.template.spec.restartPolicy: " in bad_job
    assert admitted == ""
    until(lambda: tasks.jobs("fine"), timeout=30, message="a Job of the admitted task")
    for refused in ("bad-cron", "bad-zone", "bad-job"):
        with pytest.raises(ApiException) as missing:
            tasks.get(refused)
        assert missing.value.status == 404
    operator.stop()
    if audit is None:
        pytest.skip("no audit log on this cluster (the 403 check of the fixture still ran)")
    events = audit.events(release.username)
    seen = {helm.describe(event) for event in events}
    secret, home = chart_webhook.secret, f"({release.namespace})"
    for needed in (
        f"create core/secrets {secret} {home}",
        f"get core/secrets {secret} {home}",
        f"get admissionregistration.k8s.io/validatingwebhookconfigurations {release.fullname} "
        "(cluster)",
        f"patch admissionregistration.k8s.io/validatingwebhookconfigurations {release.fullname} "
        "(cluster)",
    ):
        assert needed in seen, (needed, sorted(seen))
    # The Job checks: dry-run creates (generated names), allowed by RBAC for both
    # reviewed templates; the API server itself refused bad-job's.
    dry_runs = [
        event
        for event in events
        if helm.describe(event) == f"create batch/jobs ({namespace})"
        and "dryRun=All" in event["requestURI"]
    ]
    assert sorted(event["responseStatus"]["code"] for event in dry_runs) == [201, 422], dry_runs


# -- people ----------------------------------------------------------------------


@pytest.fixture
def people_release(
    kubeconfig: Path, namespace: str, release_namespace: str, crds: list[str]
) -> Iterator[helm.Release]:
    installed = helm.Release(
        kubeconfig,
        helm.unique_release("people"),
        release_namespace,
        helm.install_values(watch_namespaces=[namespace]),
    ).install()
    yield installed
    installed.uninstall()


@pytest.fixture
def other_namespace(core_v1: client.CoreV1Api) -> Iterator[str]:
    name = _new_namespace(core_v1, "tm-other")
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background")


def _status_code(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


@pytest.fixture
def edit_user(
    people_release: helm.Release,
    namespace: str,
    kubeconfig: Path,
    api: client.ApiClient,
    tmp_path: Path,
) -> client.ApiClient:
    """A client of a user (a ServiceAccount's token) bound to <fullname>-edit in `namespace`."""
    user = f"user-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=user))
    )
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{people_release.fullname}-edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": namespace}],
        },
    )
    token = helm.mint_token(kubeconfig, namespace, user)
    return config.new_client_from_config(
        config_file=str(helm.token_kubeconfig(kubeconfig, token, tmp_path / "user.kubeconfig"))
    )


def test_a_user_bound_to_edit_in_one_namespace_manages_tasks_there_only(
    edit_user: client.ApiClient, namespace: str, other_namespace: str
) -> None:
    user_api = edit_user
    mine, elsewhere = Tasks(user_api, namespace), Tasks(user_api, other_namespace)
    custom = client.CustomObjectsApi(user_api)
    spec = {"schedule": "0 0 * * *", "task": CONTAINER}

    # RBAC takes a moment to see a new binding.
    until(lambda: _status_code(lambda: mine.create("mine", spec)) == 200, timeout=10,
          message="the user can create tasks")  # fmt: skip
    mine.patch("mine", {"spec": {"suspend": True}})
    assert mine.get("mine")["spec"]["suspend"] is True
    assert (
        custom.get_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "mine")[
            "metadata"
        ]["name"]
        == "mine"
    )
    assert [t["metadata"]["name"] for t in
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            ] == ["mine"]  # fmt: skip

    # The status is the operator's; Jobs and other namespaces are not the user's.
    assert _status_code(lambda: custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "mine", {"status": {"phase": "Completed"}}
    )) == 403  # fmt: skip
    assert _status_code(lambda: client.BatchV1Api(user_api).list_namespaced_job(namespace)) == 403
    assert _status_code(lambda: elsewhere.create("theirs", spec)) == 403
    assert _status_code(lambda: custom.list_namespaced_custom_object(
        GROUP, VERSION, other_namespace, PLURAL)) == 403  # fmt: skip
    assert _status_code(
        lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    ) == 403  # fmt: skip

    mine.delete("mine")
    assert _status_code(lambda: mine.get("mine")) == 404


def _grants(role: client.V1ClusterRole, verb: str) -> bool:
    return any(
        "taskmaster.dev" in (rule.api_groups or [])
        and "scheduledtasks" in (rule.resources or [])
        and verb in rule.verbs
        for rule in role.rules or []
    )


def test_the_built_in_roles_aggregate_the_chart_roles(
    people_release: helm.Release, api: client.ApiClient, kubeconfig: Path
) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    # This release's roles are the only source of the rules the built-in ones gain
    # (roles that are themselves aggregates, like view into edit, pass them on).
    for aggregate in ("view", "edit"):
        label = f"rbac.authorization.k8s.io/aggregate-to-{aggregate}=true"
        sources = rbac.list_cluster_role(label_selector=label).items
        granting = {
            role.metadata.name
            for role in sources
            if role.aggregation_rule is None and _grants(role, "get")
        }
        assert granting == {f"{people_release.fullname}-{aggregate}"}
    # kube-controller-manager's clusterrole-aggregation controller fills them.
    for built_in, verb in (("view", "watch"), ("edit", "create"), ("admin", "delete")):
        until(
            lambda built_in=built_in, verb=verb: _grants(rbac.read_cluster_role(built_in), verb),
            timeout=30,
            message=f"the built-in {built_in} role granting {verb} on scheduledtasks",
        )
    assert not _grants(rbac.read_cluster_role("view"), "create")
    edit = rbac.read_cluster_role(f"{people_release.fullname}-edit")
    assert edit.metadata.labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
