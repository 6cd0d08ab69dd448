"""The Helm chart in tests: rendering, installing, the identities it creates, the audit log."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "taskmaster"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECTL = TOOLS / "bin" / "kubectl"
# CRDs of other projects that some values files need on the server (see hack/tools.py).
EXTERNAL_CRDS = TOOLS / "crds"
FORBID = "forbid"


def helm_missing() -> str | None:
    """Why the chart cannot be rendered here, or None."""
    if not HELM.exists():
        return f"{HELM.relative_to(ROOT)} is missing: run `make tools`"
    return None


def run(command: Sequence[str | Path], **kwargs: Any) -> str:
    """Run a command; its stdout, or an error carrying its stderr."""
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} exited with {result.returncode}:\n{result.stderr}"
        )
    return result.stdout


def helm(*args: str | Path, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
    prefix: list[str | Path] = [HELM]
    if kubeconfig is not None:
        prefix += ["--kubeconfig", kubeconfig]
    return run([*prefix, *args], input=stdin, timeout=300)


def kubectl(kubeconfig: Path, *args: str | Path, stdin: str | None = None) -> str:
    return run([KUBECTL, "--kubeconfig", kubeconfig, *args], input=stdin, timeout=120)


def install_values(
    *,
    watch_namespaces: Sequence[str] = (),
    webhook: bool = False,
    webhook_url: str = "",
    failure_policy: str = "",
    crds: bool = False,
) -> dict[str, Any]:
    """Values for installing the chart next to the test suite.

    The suite's `crds` fixture owns the CRD (a Helm-owned copy would clash), so
    `crds.install` is off unless asked for. A webhook is served by the operator
    process of the test (`webhook_url`, the base the chart appends the path
    to), never by the chart's simulated pods.
    """
    values: dict[str, Any] = {
        "watchNamespaces": list(watch_namespaces),
        "crds": {"install": crds},
        "webhook": {"enabled": webhook},
    }
    if webhook and webhook_url:
        values["webhook"]["url"] = webhook_url
    if webhook and failure_policy:
        values["webhook"]["failurePolicy"] = failure_policy
    return values


def merged_values(values_file: Path | None = None) -> dict[str, Any]:
    """The chart's values.yaml with a values file over it, merged as Helm does (maps deeply)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
        return merged

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    if values_file is not None:
        values = merge(values, yaml.safe_load(values_file.read_text()) or {})
    return values


def template(
    values: dict[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    release: str = "taskmaster",
    namespace: str = "taskmaster-system",
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart rendered by `helm template`, as objects."""
    text = render(
        values, values_files=values_files, release=release, namespace=namespace, extra=extra
    )
    return [document for document in yaml.safe_load_all(text) if document]


def render(
    values: dict[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    release: str = "taskmaster",
    namespace: str = "taskmaster-system",
    extra: Sequence[str] = (),
) -> str:
    args: list[str | Path] = ["template", release, CHART, "--namespace", namespace]
    for path in values_files:
        args += ["--values", path]
    if values is not None:
        args += ["--values", "-"]
    return run([HELM, *args, *extra], input=json.dumps(values) if values else None, timeout=120)


def notes(values: dict[str, Any] | None = None, *, namespace: str = "taskmaster-system") -> str:
    """templates/NOTES.txt as `helm install` prints it, rendered without a cluster.

    `helm template` renders no notes and `helm install --dry-run` needs a cluster, so a
    copy of the chart defines the notes as a named template and renders that.
    """
    with tempfile.TemporaryDirectory() as directory:
        chart = Path(directory) / CHART.name
        shutil.copytree(CHART, chart)
        templates = chart / "templates"
        text = (templates / "NOTES.txt").read_text()
        (templates / "_rendered_notes.tpl").write_text(
            '{{- define "rendered-notes" -}}\n' + text + "{{- end -}}\n"
        )
        (templates / "rendered-notes.yaml").write_text(
            'text: {{ include "rendered-notes" . | toJson }}\n'
        )
        args: list[str | Path] = ["template", "taskmaster", chart, "--namespace", namespace]
        args += ["--show-only", "templates/rendered-notes.yaml"]
        if values is not None:
            args += ["--values", "-"]
        output = run([HELM, *args], input=json.dumps(values) if values else None, timeout=120)
    rendered: str = yaml.safe_load(output)["text"]
    return rendered


def unique_release(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Release:
    """A `helm install` of the chart, uninstalled by `uninstall`."""

    kubeconfig: Path
    name: str
    namespace: str
    values: dict[str, Any]

    def install(self) -> Release:
        helm(
            "install", self.name, CHART, "--namespace", self.namespace, "--values", "-",
            "--wait", "--timeout", "120s",
            kubeconfig=self.kubeconfig, stdin=json.dumps(self.values),
        )  # fmt: skip
        return self

    def uninstall(self) -> None:
        helm(
            "uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s",
            kubeconfig=self.kubeconfig,
        )  # fmt: skip

    @property
    def fullname(self) -> str:
        return self.name if "taskmaster" in self.name else f"{self.name}-taskmaster"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def mint_token(kubeconfig: Path, namespace: str, service_account: str) -> str:
    """A short-lived token of a ServiceAccount (`kubectl create token`)."""
    return kubectl(
        kubeconfig, "create", "token", service_account, "--namespace", namespace,
        "--duration", "1h",
    ).strip()  # fmt: skip


def token_kubeconfig(cluster_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig with the cluster's server and CA and only `token` as credentials.

    No client certificate: the API server would authenticate that instead.
    """
    source = yaml.safe_load(cluster_kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in source["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in source["clusters"]}
    cluster = dict(clusters[contexts[source["current-context"]]["cluster"]])
    if "certificate-authority" in cluster:
        ca_path = Path(cluster.pop("certificate-authority"))
        if not ca_path.is_absolute():
            ca_path = cluster_kubeconfig.parent / ca_path
        cluster["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "cluster", "user": "token"}}],
        "current-context": "token",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def audit_log_path(kubeconfig: Path) -> Path:
    """Where the local cluster's API server writes its audit log (see hack/cluster.sh)."""
    return kubeconfig.parent / "kwok" / "clusters" / "taskmaster" / "logs" / "audit.log"


@dataclass
class AuditLog:
    """Audit events written from now on, by user."""

    path: Path
    offset: int = field(init=False)

    def __post_init__(self) -> None:
        self.offset = self.path.stat().st_size

    def events(self, username: str) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            lines = log.read().splitlines()
        found = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # a line being written
                continue
            if event.get("user", {}).get("username") == username:
                found.append(event)
        return found


def denied(events: Sequence[dict[str, Any]]) -> list[str]:
    return [
        describe(event)
        for event in events
        if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == FORBID
        or (event.get("responseStatus") or {}).get("code") == 403
    ]


def describe(event: dict[str, Any], *, names: bool = True) -> str:
    """`verb group/resource[/subresource] [name] (namespace)`, or `verb URL` without a resource."""
    ref = event.get("objectRef")
    if not ref:
        return f"{event['verb']} {event.get('requestURI', '?')}"
    resource = f"{ref.get('apiGroup') or 'core'}/{ref.get('resource', '?')}"
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    name = f" {ref['name']}" if names and ref.get("name") else ""
    return f"{event['verb']} {resource}{name} ({ref.get('namespace') or 'cluster'})"


def summary(events: Sequence[dict[str, Any]], namespaces: dict[str, str]) -> Counter[str]:
    """Requests counted by verb and resource, namespaces named by their role."""
    counts: Counter[str] = Counter()
    for event in events:
        text = describe(event, names=False)
        for name, role in namespaces.items():
            text = text.replace(f"({name})", f"({role})")
        counts[text] += 1
    return counts


def of_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]
