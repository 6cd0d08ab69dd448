"""The Helm chart rendered without a cluster: lint, security, RBAC shape, schema, CRD copy."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmaster.shell.operator import parse_args
from tests.support import helm

pytestmark = pytest.mark.skipif(helm.helm_missing() is not None, reason=str(helm.helm_missing()))

CRDS = helm.ROOT / "crds"
RBAC_KINDS = ("Role", "ClusterRole")


def rules_of(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']} {obj['metadata']['name']}", rule)
        for obj in objects
        if obj["kind"] in RBAC_KINDS
        for rule in obj.get("rules") or []
    ]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = helm.of_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return helm.template()


@pytest.mark.parametrize(
    "values", [None, *helm.CI_VALUES], ids=lambda v: v.name if v else "default"
)
def test_helm_lint_strict_is_clean(values: Path | None) -> None:
    args = ["lint", "--strict", helm.CHART]
    if values:
        args += ["--values", values]
    output = helm.helm(*args)
    assert "0 chart(s) failed" in output
    assert "[WARNING]" not in output
    assert "[ERROR]" not in output


def test_there_are_ci_values_files() -> None:
    names = {path.name for path in helm.CI_VALUES}
    assert {"watch-namespaces-values.yaml", "monitoring-values.yaml"} <= names


def test_the_chart_copy_of_the_crd_is_the_crd(default: list[dict[str, Any]]) -> None:
    copies = sorted((helm.CHART / "files" / "crds").glob("*.yaml"))
    sources = sorted(CRDS.glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in sources], "run `make chart-crds`"
    for copy, source in zip(copies, sources, strict=True):
        assert copy.read_bytes() == source.read_bytes(), (
            f"{copy.name} differs: run `make chart-crds`"
        )
    # And the template renders it unchanged but for the chart's labels and the keep policy.
    rendered = {
        crd["metadata"]["name"]: crd for crd in helm.of_kind(default, "CustomResourceDefinition")
    }
    for source in sources:
        original = yaml.safe_load(source.read_text())
        crd = rendered[original["metadata"]["name"]]
        assert crd["spec"] == original["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert original["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_can_be_left_out_or_not_kept() -> None:
    assert not helm.of_kind(helm.template({"crds": {"install": False}}), "CustomResourceDefinition")
    (crd,) = helm.of_kind(helm.template({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_the_operator_pod_is_restricted_and_probed(default: list[dict[str, Any]]) -> None:
    (deployment,) = helm.of_kind(default, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(default)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # noqa: S108
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081, "webhook": 9443}
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert container["image"] == "ghcr.io/taskmaster-dev/taskmaster-operator:0.1.0"


def test_the_operator_arguments(default: list[dict[str, Any]]) -> None:
    args = operator_container(default)["args"]
    fullname, namespace = "taskmaster", "taskmaster-system"
    for expected in (
        "--leader-elect",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--log-format=json",
        "--metrics-port=8080",
        "--health-port=8081",
        "--worker-image=ghcr.io/taskmaster-dev/taskmaster-worker:0.1.0",
        "--webhook-port=9443",
        f"--webhook-secret={fullname}-webhook-tls",
        f"--webhook-dns-name={fullname}-webhook.{namespace}.svc",
        f"--webhook-dns-name={fullname}-webhook.{namespace}.svc.cluster.local",
        f"--webhook-configuration={fullname}",
    ):
        assert expected in args
    assert not any(arg.startswith("--namespace") for arg in args)
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in operator_container(default)["env"]
    }
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}

    namespaced = operator_container(helm.template({"watchNamespaces": ["a", "b"]}))["args"]
    assert [a for a in namespaced if a.startswith("--namespace")] == [
        "--namespace=a",
        "--namespace=b",
    ]


def _arguments(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The container's args with `$(VAR)` replaced as the kubelet does."""
    args = []
    for arg in container["args"]:
        resolved = arg
        for name, value in env.items():
            resolved = resolved.replace(f"$({name})", value)
        args.append(resolved)
    return args


@pytest.mark.parametrize(
    "values_file", [None, *helm.CI_VALUES], ids=lambda path: path.name if path else "default"
)
def test_the_operator_parses_the_arguments_the_chart_gives(
    values_file: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real parser takes what the chart passes, and the names agree with the objects."""
    release, namespace = "tm", "tm-system"
    objects = helm.template(
        values_files=[values_file] if values_file else [], release=release, namespace=namespace
    )
    values = helm.merged_values(values_file)
    fullname = f"{release}-taskmaster"
    container = operator_container(objects)
    # The pod's downward-API environment, which --lease-namespace defaults to.
    env = {"POD_NAMESPACE": namespace, "POD_NAME": f"{fullname}-0"}
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    monkeypatch.setenv("POD_NAME", env["POD_NAME"])

    options = parse_args(_arguments(container, env))

    assert options.leader_elect is values["leaderElection"]["enabled"]
    assert options.lease_namespace == namespace
    assert options.namespace == values["watchNamespaces"]
    assert options.log_format == values["logFormat"]
    assert options.metrics_port == values["metrics"]["port"]
    webhook = values["webhook"]
    if not webhook["enabled"]:
        assert options.webhook_port == 0
        return
    assert options.webhook_port == webhook["port"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["webhook"] == options.webhook_port
    configurations = helm.of_kind(objects, "ValidatingWebhookConfiguration")
    (configuration,) = configurations
    assert configuration["metadata"]["name"] == fullname
    (hook,) = configuration["webhooks"]
    assert hook["failurePolicy"] == webhook["failurePolicy"]
    assert hook["timeoutSeconds"] == webhook["timeoutSeconds"]
    client = hook["clientConfig"]
    if webhook["url"]:
        assert client == {"url": webhook["url"].rstrip("/") + "/validate-scheduledtask"}
    else:
        assert client["service"]["path"] == "/validate-scheduledtask"
        service = find(objects, "Service", client["service"]["name"])
        assert service["spec"]["ports"][0]["port"] == client["service"]["port"]
        assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    secret = f"{fullname}-webhook-tls"
    if webhook["certManager"]["enabled"]:
        # cert-manager's Secret, mounted where --webhook-cert-dir points; its CA injector
        # fills caBundle, so the operator neither writes a Secret nor the configuration.
        (certificate,) = helm.of_kind(objects, "Certificate")
        assert certificate["spec"]["secretName"] == secret
        (deployment,) = helm.of_kind(objects, "Deployment")
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts[options.webhook_cert_dir]]["secret"]["secretName"] == secret
        assert options.webhook_configuration is None
        assert not options.webhook_dns_name
        annotation = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{namespace}/{certificate['metadata']['name']}"
        return
    # Self-signed: the Secret and the configuration the operator writes are the
    # ones the chart names and lets it write, in the namespace it looks in.
    assert options.webhook_cert_dir is None
    assert options.webhook_secret == secret
    assert options.webhook_configuration == fullname
    runtime = find(objects, "Role", f"{fullname}-runtime")
    assert runtime["metadata"]["namespace"] == options.lease_namespace
    assert any(
        rule["resources"] == ["secrets"] and rule.get("resourceNames") == [secret]
        for rule in runtime["rules"]
    )
    (rule,) = find(objects, "ClusterRole", f"{fullname}-webhook")["rules"]
    assert rule["resourceNames"] == [options.webhook_configuration]
    # The API server checks the certificate against <service>.<namespace>.svc.
    assert f"{fullname}-webhook.{namespace}.svc" in options.webhook_dns_name


def test_no_wildcards_in_any_rule() -> None:
    for values in (None, {"watchNamespaces": ["a"]}, *map(yaml_file, helm.CI_VALUES)):
        for owner, rule in rules_of(helm.template(values)):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(key) or []), (owner, rule)
            assert "nonResourceURLs" not in rule, (owner, rule)


def yaml_file(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


def test_the_operator_rules_are_exactly_what_it_does(default: list[dict[str, Any]]) -> None:
    operator = find(default, "ClusterRole", "taskmaster")
    granted = {
        (group, resource, verb)
        for rule in operator["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("taskmaster.dev", "scheduledtasks", "list"),
        ("taskmaster.dev", "scheduledtasks", "watch"),
        ("taskmaster.dev", "scheduledtasks/status", "patch"),
        ("taskmaster.dev", "scheduledtasks/finalizers", "update"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("events.k8s.io", "events", "create"),
    }


def test_the_lease_and_the_secret_are_ruled_by_name_in_the_release_namespace(
    default: list[dict[str, Any]],
) -> None:
    runtime = find(default, "Role", "taskmaster-runtime")
    assert runtime["metadata"]["namespace"] == "taskmaster-system"
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for rule in runtime["rules"]:
        (resource,) = rule["resources"]
        by_resource.setdefault(resource, []).append(rule)
    assert set(by_resource) == {"leases", "secrets"}
    for resource, name in (
        ("leases", "taskmaster-operator"),
        ("secrets", "taskmaster-webhook-tls"),
    ):
        # A create cannot be limited to a name; everything else is.
        unnamed, named = sorted(by_resource[resource], key=lambda r: "resourceNames" in r)
        assert unnamed["verbs"] == ["create"]
        assert named["resourceNames"] == [name]
        assert named["verbs"] == ["get", "update"]
    webhook = find(default, "ClusterRole", "taskmaster-webhook")
    assert webhook["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["taskmaster"],
            "verbs": ["get", "patch"],
        }
    ]
    # No webhook, no Secret or webhook rules; no election, no Lease rules.
    bare = helm.template(
        {"webhook": {"enabled": False}, "leaderElection": {"enabled": False}, "replicas": 1}
    )
    assert not [o for o in bare if o["kind"] == "Role"]
    assert not [o for o in bare if o["metadata"]["name"] == "taskmaster-webhook"]
    manager = helm.template(
        {"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}
    )
    assert [r["resources"] for r in find(manager, "Role", "taskmaster-runtime")["rules"]] == [
        ["leases"],
        ["leases"],
    ]


def test_watch_namespaces_render_roles_instead_of_cluster_roles() -> None:
    objects = helm.template({"watchNamespaces": ["team-a", "team-b"]})
    roles = {
        (o["metadata"]["namespace"], o["metadata"]["name"]) for o in helm.of_kind(objects, "Role")
    }
    assert roles == {
        ("team-a", "taskmaster"),
        ("team-b", "taskmaster"),
        ("taskmaster-system", "taskmaster-runtime"),
    }
    for binding in helm.of_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "taskmaster", "namespace": "taskmaster-system"}
        ]
    # The only ClusterRoles left: the webhook's own configuration and people's roles.
    cluster_roles = {o["metadata"]["name"] for o in helm.of_kind(objects, "ClusterRole")}
    assert cluster_roles == {"taskmaster-webhook", "taskmaster-view", "taskmaster-edit"}
    (webhook,) = helm.of_kind(objects, "ValidatingWebhookConfiguration")
    selector = webhook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert selector == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    ]


def test_people_roles_aggregate_into_the_built_in_ones(default: list[dict[str, Any]]) -> None:
    view = find(default, "ClusterRole", "taskmaster-view")
    edit = find(default, "ClusterRole", "taskmaster-edit")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    for role in (view, edit):
        writes = {
            verb
            for rule in role["rules"]
            if "scheduledtasks/status" in rule["resources"]
            for verb in rule["verbs"]
        }
        assert writes <= {"get", "list", "watch"}, "the status is the operator's"


def test_the_webhook_configuration(default: list[dict[str, Any]]) -> None:
    (configuration,) = helm.of_kind(default, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["name"] == "taskmaster"
    (webhook,) = configuration["webhooks"]
    assert webhook["name"] == "validate.scheduledtasks.taskmaster.dev"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] == 5
    assert "caBundle" not in webhook["clientConfig"]
    assert webhook["clientConfig"]["service"] == {
        "name": "taskmaster-webhook",
        "namespace": "taskmaster-system",
        "path": "/validate-scheduledtask",
        "port": 443,
    }
    (rule,) = webhook["rules"]
    assert (rule["apiGroups"], rule["apiVersions"], rule["resources"]) == (
        ["taskmaster.dev"],
        ["v1"],
        ["scheduledtasks"],
    )
    assert rule["operations"] == ["CREATE", "UPDATE"]
    service = find(default, "Service", "taskmaster-webhook")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]

    (by_url,) = helm.of_kind(
        helm.template({"webhook": {"url": "https://127.0.0.1:9443"}}),
        "ValidatingWebhookConfiguration",
    )
    assert by_url["webhooks"][0]["clientConfig"] == {
        "url": "https://127.0.0.1:9443/validate-scheduledtask"
    }
    off = helm.template({"webhook": {"enabled": False}})
    assert not helm.of_kind(off, "ValidatingWebhookConfiguration")
    assert not any(a.startswith("--webhook") for a in operator_container(off)["args"])


def test_cert_manager_issues_the_webhook_certificate() -> None:
    objects = helm.template(
        {
            "webhook": {
                "certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "Issuer"}}
            }
        }
    )
    (certificate,) = helm.of_kind(objects, "Certificate")
    assert certificate["spec"]["secretName"] == "taskmaster-webhook-tls"
    assert certificate["spec"]["issuerRef"]["name"] == "ca"
    assert "taskmaster-webhook.taskmaster-system.svc" in certificate["spec"]["dnsNames"]
    (configuration,) = helm.of_kind(objects, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "taskmaster-system/taskmaster-webhook"
    }
    container = operator_container(objects)
    assert "--webhook-cert-dir=/etc/taskmaster/webhook" in container["args"]
    assert not any(a.startswith("--webhook-secret") for a in container["args"])
    with pytest.raises(RuntimeError, match=r"issuerRef\.name is required"):
        helm.template({"webhook": {"certManager": {"enabled": True}}})


def test_the_mounted_private_key_is_not_world_readable() -> None:
    objects = helm.template(CERT_MANAGER)
    (deployment,) = helm.of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["defaultMode"] == 0o440
    # The kubelet gives the files the pod's fsGroup: the operator reads them through
    # its group, as the owner (root) could; nobody else can.
    security = pod["securityContext"]
    assert security["fsGroup"] == security["runAsGroup"] == 65532
    assert security["runAsUser"] != 0


def test_optional_objects_are_off_by_default(default: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in default}
    assert not kinds & {"PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy", "Certificate"}
    everything = helm.template(values_files=[helm.CHART / "ci" / "monitoring-values.yaml"])
    assert {"PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy"} <= {
        o["kind"] for o in everything
    }


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replica": 3}, "additional properties 'replica' not allowed"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"webhook": {"tls": True}}, "additional properties 'tls' not allowed"),
        ({"crds": {"install": "yes"}}, "install"),
        ({"watchNamespaces": ["Not_A_Name"]}, "watchNamespaces"),
        ({"webhook": {"url": "http://insecure:9443"}}, "url"),
        ({"leaderElection": {"enabled": False}}, "more than one replica needs leaderElection"),
    ],
)
def test_the_schema_refuses_unknown_keys_and_bad_values(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(RuntimeError, match=complaint):
        helm.template(values)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(15, 10, 2), (3, 2, 1), (10, 10, 2), (15, 20, 2), (15, 10, 10), (15, 10, 12), (2, 3, 4)],
)
def test_the_chart_refuses_lease_timings_the_operator_refuses(
    duration: int, deadline: int, retry: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retryPeriod < renewDeadline < leaseDuration fails at render time, not in a crash loop."""
    monkeypatch.setenv("POD_NAMESPACE", "taskmaster-system")
    election = {
        "leaseDurationSeconds": duration,
        "renewDeadlineSeconds": deadline,
        "retryPeriodSeconds": retry,
    }
    operator_accepts = retry < deadline < duration
    if operator_accepts:
        container = operator_container(helm.template({"leaderElection": election}))
        options = parse_args(container["args"])
        assert (options.lease_duration, options.renew_deadline, options.retry_period) == (
            duration,
            deadline,
            retry,
        )
    else:
        with pytest.raises(SystemExit):
            parse_args(
                [
                    *("--lease-duration", str(duration)),
                    *("--renew-deadline", str(deadline)),
                    *("--retry-period", str(retry)),
                ]
            )
        message = (
            r"leaderElection\.retryPeriodSeconds \(\d+\) < "
            r"leaderElection\.renewDeadlineSeconds \(\d+\) < "
            r"leaderElection\.leaseDurationSeconds \(\d+\)"
        )
        with pytest.raises(RuntimeError, match=message):
            helm.template({"leaderElection": election})
    # Without leader election the timings are not passed, so not checked.
    alone = {"enabled": False, **election}
    assert helm.template({"leaderElection": alone, "replicas": 1})


def test_an_existing_service_account_must_be_named() -> None:
    """Without a name the pods would run as `default`, lending the operator's rights to
    every pod of the release namespace that uses it."""
    with pytest.raises(RuntimeError, match=r"serviceAccount\.name is required"):
        helm.template({"serviceAccount": {"create": False}})
    objects = helm.template({"serviceAccount": {"create": False, "name": "ops"}})
    assert not helm.of_kind(objects, "ServiceAccount")
    (deployment,) = helm.of_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    for binding in helm.of_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"][0]["name"] == "ops"


def test_the_chart_can_run_no_operator_for_development() -> None:
    """With `webhook.url`, the operator runs outside the cluster and shares the webhook's
    Secret: the chart's pods would re-issue it for their names, so they are scaled to 0."""
    values = {
        "webhook": {"url": "https://127.0.0.1:9443"},
        "replicas": 0,
        "podDisruptionBudget": {"enabled": True},
    }
    objects = helm.template(values)
    (deployment,) = helm.of_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 0
    # A budget for no pods protects nothing.
    assert not helm.of_kind(objects, "PodDisruptionBudget")
    assert helm.of_kind(
        helm.template({"podDisruptionBudget": {"enabled": True}}), "PodDisruptionBudget"
    )
    output = helm.helm("lint", "--strict", helm.CHART, "--values", "-", stdin=json.dumps(values))
    assert "[WARNING]" not in output
    notes = helm.notes(values)
    assert "No operator runs in the cluster" in notes
    assert "one of which leads" not in notes
    assert "replica(s)" not in notes
    assert "run no operator" not in notes
    # The chart's pods and an operator outside would take turns re-issuing the Secret.
    assert "run no operator" in helm.notes({"webhook": {"url": "https://127.0.0.1:9443"}})
    assert "run no operator" not in helm.notes()


def test_a_long_release_name_keeps_every_name_within_63_characters() -> None:
    objects = helm.template(release="r" * 53)
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


# The one way the docs, the notes and deploy/argocd/application.yaml tell Argo CD to
# leave the webhook's caBundle alone (`?`: no error on a configuration without webhooks).
CA_BUNDLE_PATH = ".webhooks[]?.clientConfig.caBundle"
CERT_MANAGER = {"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}


def notes_ignore_differences(notes: str) -> list[dict[str, Any]] | None:
    """The `ignoreDifferences:` block the notes print, parsed; None without one."""
    lines = notes.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "ignoreDifferences:"]
    if not starts:
        return None
    (start,) = starts
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip() or len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    parsed: list[dict[str, Any]] = yaml.safe_load(textwrap.dedent("\n".join(block)))[
        "ignoreDifferences"
    ]
    return parsed


def markdown_ignore_differences(markdown: str) -> list[list[dict[str, Any]]]:
    """Every `ignoreDifferences` of the ```yaml blocks of a page, parsed."""
    found = []
    for block in re.findall(r"^( *)```yaml\n(.*?)^\1```$", markdown, re.M | re.S):
        text = textwrap.dedent(block[1])
        if "ignoreDifferences" not in text:
            continue
        document = yaml.safe_load(text)
        found.append((document.get("spec") or document)["ignoreDifferences"])
    return found


def assert_ignores_the_ca_bundle(entries: list[dict[str, Any]] | None) -> None:
    assert entries is not None, "no ignoreDifferences"
    (entry,) = entries
    assert entry["group"] == "admissionregistration.k8s.io"
    assert entry["kind"] == "ValidatingWebhookConfiguration"
    assert entry.get("name", "taskmaster") == "taskmaster"
    assert entry["jqPathExpressions"] == [CA_BUNDLE_PATH]
    assert set(entry) <= {"group", "kind", "name", "jqPathExpressions"}, "one way: no jsonPointers"


@pytest.mark.parametrize(
    "values",
    [None, CERT_MANAGER, {"webhook": {"url": "https://127.0.0.1:9443"}}],
    ids=["self-signed", "cert-manager", "url"],
)
def test_the_notes_tell_argo_cd_to_ignore_the_ca_bundle_whenever_the_webhook_is_on(
    values: dict[str, Any] | None,
) -> None:
    assert_ignores_the_ca_bundle(notes_ignore_differences(helm.notes(values)))


def test_the_notes_give_no_ca_bundle_hint_without_a_webhook() -> None:
    assert notes_ignore_differences(helm.notes({"webhook": {"enabled": False}})) is None


@pytest.mark.parametrize(
    "page",
    [helm.CHART / "README.md", helm.ROOT / "docs" / "webhook.md", helm.ROOT / "docs" / "argocd.md"],
    ids=lambda path: path.name,
)
def test_the_docs_tell_argo_cd_to_ignore_the_ca_bundle_the_one_way(page: Path) -> None:
    snippets = markdown_ignore_differences(page.read_text())
    assert snippets, f"{page.name} shows no ignoreDifferences"
    for entries in snippets:
        assert_ignores_the_ca_bundle(entries)
    assert "/webhooks/0/" not in page.read_text(), "one way: the jq path, not a JSON pointer"


def test_the_notes_check_the_lease_only_with_leader_election() -> None:
    assert "get lease taskmaster-operator" in helm.notes()
    alone = helm.notes({"leaderElection": {"enabled": False}, "replicas": 1})
    assert "get lease" not in alone
    assert "Lease" not in alone


def test_the_notes_put_the_sample_task_where_it_runs() -> None:
    everywhere = helm.notes()
    assert "\n  kubectl apply -f - <<'YAML'\n" in everywhere
    assert "\n  kubectl get scheduledtasks -w" in everywhere
    scoped = helm.notes({"watchNamespaces": ["team-a", "team-b"]})
    assert "\n  kubectl -n team-a apply -f - <<'YAML'\n" in scoped
    assert "\n  kubectl -n team-a get scheduledtasks -w" in scoped
    assert "kubectl apply" not in scoped


def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            keys += leaves(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def readme_values_table() -> dict[str, Any]:
    """The README's values table: key to its default, read as YAML from the cell."""
    readme = (helm.CHART / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", readme, re.M)
    assert rows, "no values table"
    table: dict[str, Any] = {}
    for key, default in rows:
        assert key not in table, f"{key} twice in the README's values table"
        table[key] = yaml.safe_load(default)
    return table


def test_the_readme_documents_every_value_with_its_default() -> None:
    table = readme_values_table()
    values = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    expected = {}
    for key in leaves(values):
        value: Any = values
        for part in key.split("."):
            value = value[part]
        expected[key] = value
    missing = sorted(expected.keys() - table.keys())
    assert not missing, f"not in the README's values table: {missing}"
    unknown = sorted(table.keys() - expected.keys())
    assert not unknown, f"in the README's values table, not in values.yaml: {unknown}"
    wrong = {key: (table[key], expected[key]) for key in expected if table[key] != expected[key]}
    assert not wrong, f"README default != values.yaml (README, values.yaml): {wrong}"
