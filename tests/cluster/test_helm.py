"""The chart's output is accepted by a real API server: default values and every ci/ file.

`kubectl apply --dry-run=server` runs admission and validation (schemas of
built-in kinds and of CRDs, RBAC escalation checks) without persisting
anything, so nothing cluster-wide changes for anyone else. Values files that
render objects of other projects (ServiceMonitor, Certificate) need those
CRDs on the server: they come from the projects' own Go modules (`make
tools`), are installed for the test when absent and removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support import helm
from tests.support.wait import until

NAMESPACED = {
    "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
    "NetworkPolicy", "ServiceMonitor", "Certificate",
}  # fmt: skip

pytestmark = pytest.mark.skipif(helm.helm_missing() is not None, reason=str(helm.helm_missing()))


@pytest.fixture(scope="module")
def external_crds(api: client.ApiClient) -> Iterator[set[str]]:
    """Kinds (`group/Kind`) of the external CRDs now served; those installed here go afterwards."""
    extensions = client.ApiextensionsV1Api(api)
    served: set[str] = set()
    installed: list[str] = []
    for path in sorted(helm.EXTERNAL_CRDS.glob("*.yaml")) if helm.EXTERNAL_CRDS.exists() else []:
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        try:
            extensions.create_custom_resource_definition(crd)
            installed.append(name)
        except ApiException as error:
            if error.status != 409:
                raise

        def established(name: str = name) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        until(established, timeout=30, message=f"CRD {name} established")
        served.add(f"{crd['spec']['group']}/{crd['spec']['names']['kind']}")
    yield served
    for name in installed:
        extensions.delete_custom_resource_definition(name)


@pytest.fixture
def release_namespace(core_v1: client.CoreV1Api) -> Iterator[str]:
    name = helm.unique_release("tm-dry")
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background")


@pytest.mark.parametrize(
    "values_file", [None, *helm.CI_VALUES], ids=lambda path: path.name if path else "default"
)
def test_the_rendered_chart_passes_a_server_side_dry_run(
    values_file: Path | None,
    kubeconfig: Path,
    crds: list[str],
    external_crds: set[str],
    release_namespace: str,
) -> None:
    files = [values_file] if values_file else []
    objects = helm.template(values_files=files, release="dry-run", namespace=release_namespace)
    needed = {
        f"{obj['apiVersion'].split('/')[0]}/{obj['kind']}"
        for obj in objects
        if obj["apiVersion"].split("/")[0].endswith(("coreos.com", "cert-manager.io"))
    }
    if missing := needed - external_crds:
        pytest.skip(f"CRDs of {sorted(missing)} not available: run `make tools`")
    manifest = helm.render(values_files=files, release="dry-run", namespace=release_namespace)

    output = helm.kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=manifest)

    # Every object names its namespace: none falls into kubectl's default.
    assert all(obj["metadata"].get("namespace") for obj in objects if obj["kind"] in NAMESPACED), (
        "an object without a namespace"
    )
    lines = output.splitlines()
    assert len(lines) == len(objects), output
    assert all(line.endswith("(server dry run)") for line in lines), output
