"""Fixtures shared by the whole suite: the cluster, API clients, CRDs, namespaces.

`--cluster` chooses what the cluster tests talk to:

- `local` (default): the kwokctl cluster of `make cluster-up`. It is started
  when not already up and, if the session started it, stopped at the end
  (unless `--keep-cluster`).
- `existing`: whatever `$KUBECONFIG` points at, used as is.
- `kind`: a kind cluster from pytest-kind-ng, where a Docker engine runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.ha import LeaseHolders
from tests.support.namespaces import create_namespace
from tests.support.operator import OperatorProcess
from tests.support.plugin import User
from tests.support.tasks import Tasks
from tests.support.wait import until

ROOT = Path(__file__).resolve().parent.parent
LOCAL_KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
CLUSTER_SCRIPT = ROOT / "hack" / "cluster.sh"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=("local", "existing", "kind"),
        default="local",
        help="the cluster the cluster tests use (default: the local kwokctl cluster)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    cluster_dir = Path(__file__).parent / "cluster"
    real_dir = Path(__file__).parent / "real"
    for item in items:
        if cluster_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.cluster)
        if real_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.real_node)
    # Scale tests leave the control plane busy collecting thousands of objects
    # for a while: nothing should run after them but other scale tests.
    items.sort(key=lambda item: item.get_closest_marker("scale") is not None)


def _docker_engine_runs() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def _local_cluster_ready() -> bool:
    probe = subprocess.run(
        [str(CLUSTER_SCRIPT), "status"], capture_output=True, check=False, timeout=60
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest) -> Iterator[Path]:
    """Path of a kubeconfig for a ready cluster."""
    mode = request.config.getoption("--cluster")
    if mode == "existing":
        if "KUBECONFIG" not in os.environ:
            pytest.fail("--cluster=existing needs $KUBECONFIG")
        yield Path(os.environ["KUBECONFIG"])
    elif mode == "kind":
        if not _docker_engine_runs():
            pytest.skip("--cluster=kind needs a running Docker engine; none answers here")
        kind_cluster = request.getfixturevalue("kind_cluster")
        yield Path(kind_cluster.kubeconfig_path)
    elif _local_cluster_ready():
        yield LOCAL_KUBECONFIG
    else:
        subprocess.run([str(CLUSTER_SCRIPT), "up"], check=True, timeout=600)
        try:
            yield LOCAL_KUBECONFIG
        finally:
            if not request.config.getoption("--keep-cluster"):
                subprocess.run([str(CLUSTER_SCRIPT), "down"], check=True, timeout=300)


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def core_v1(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def batch_v1(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> list[str]:
    """Install (or update) every CRD in crds/ and wait until each is established."""
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for manifest in yaml.safe_load_all(path.read_text()):
            name = manifest["metadata"]["name"]
            try:
                extensions.create_custom_resource_definition(manifest)
            except ApiException as error:
                if error.status != 409:
                    raise
                current = extensions.read_custom_resource_definition(name)
                manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
                extensions.replace_custom_resource_definition(name, manifest)
            names.append(name)

    def established(name: str) -> bool:
        crd = extensions.read_custom_resource_definition(name)
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        until(lambda name=name: established(name), timeout=30, message=f"CRD {name} established")
    return names


@pytest.fixture
def namespace(core_v1: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    label = re.sub(r"[^\w.-]", "-", request.node.name)[:63].strip("-_.")
    create_namespace(core_v1, name, labels={"taskmaster.dev/test": label})
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def operators(
    kubeconfig: Path,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Make operator processes watching the test's namespace (with its own Lease there)."""
    started: list[OperatorProcess] = []

    def make(*args: str) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            ["--namespace", namespace, "--lease-namespace", namespace, *args],
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
        request.node.add_report_section("call", f"log of {process.log_path.name}", process.logs())


@pytest.fixture
def operator(operators: Callable[..., OperatorProcess]) -> OperatorProcess:
    """One running operator for the test's namespace."""
    return operators().start()


@pytest.fixture
def holders(api: client.ApiClient, namespace: str) -> Iterator[LeaseHolders]:
    """The holders of the test's Lease, as they change."""
    watcher = LeaseHolders(api, namespace)
    yield watcher
    watcher.close()


@pytest.fixture
def user(kubeconfig: Path, namespace: str) -> User:
    """Someone at a shell running `kubectl taskmaster` in the test's namespace."""
    return User(kubeconfig, namespace)


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str) -> Tasks:
    return Tasks(api, namespace)
