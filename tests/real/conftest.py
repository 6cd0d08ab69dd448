"""The real tier: the chart, the worker and tasks run as containers on the real node.

Skipped, saying why, where a real node cannot run (hack/node.py check); where
it can, the local cluster starts one and these tests must pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import LOCAL_KUBECONFIG
from tests.support import helm
from tests.support.real import create_namespace, images, node, repository_and_tag
from tests.support.tasks import Tasks

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="session")
def real_node(kubeconfig: Path, api: client.ApiClient) -> str:
    """The real node's name, once it is Ready and the `kubernetes` Service points at its relay."""
    if kubeconfig.resolve() != LOCAL_KUBECONFIG.resolve():
        pytest.skip("the real node belongs to the local cluster (--cluster=local)")
    reason = node.why_not()
    if reason:
        pytest.skip(f"no real node on this machine: {reason}")
    if not node.running():
        pytest.fail("a real node can run here but is not up: `make cluster-down cluster-up`")
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    addresses = {a for s in slices.items for e in s.endpoints or [] for a in e.addresses}
    if node.ADDRESS not in addresses:
        pytest.fail(
            f"the `kubernetes` Service points at {sorted(addresses)}, not the node's bridge:"
            " the cluster was started without the node; `make cluster-down cluster-up`"
        )
    name: str = node.NAME
    return name


@pytest.fixture(scope="session")
def real_namespaces(real_node: str, core_v1: client.CoreV1Api) -> Iterator[tuple[str, str]]:
    """Two namespaces on the real node: the release's, and one enforcing `restricted`."""
    suffix = uuid.uuid4().hex[:6]
    names = (
        create_namespace(core_v1, f"tm-real-{suffix}"),
        create_namespace(core_v1, f"tm-restricted-{suffix}", labels=RESTRICTED),
    )
    yield names
    for name in names:
        core_v1.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def release(
    kubeconfig: Path, crds: list[str], real_namespaces: tuple[str, str]
) -> Iterator[helm.Release]:
    """`helm install` of the chart with the built images; `--wait` means both pods Ready."""
    built = images()
    repository, tag = repository_and_tag(built["taskmaster-operator"])
    worker_repository, worker_tag = repository_and_tag(built["taskmaster-worker"])
    values = helm.install_values(watch_namespaces=real_namespaces)
    values |= {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "workerImage": {"repository": worker_repository, "tag": worker_tag},
    }
    installed = helm.Release(
        kubeconfig, helm.unique_release("tm-real"), real_namespaces[0], values
    ).install()
    yield installed
    installed.uninstall()


@pytest.fixture
def real_tasks(api: client.ApiClient, release: helm.Release) -> Tasks:
    """Tasks in the release's own namespace, run by the installed operator."""
    return Tasks(api, release.namespace)


@pytest.fixture
def restricted_tasks(
    api: client.ApiClient, release: helm.Release, real_namespaces: tuple[str, str]
) -> Tasks:
    return Tasks(api, real_namespaces[1])


@pytest.fixture(scope="session")
def worker_image(real_node: str) -> str:
    return images()["taskmaster-worker"]
