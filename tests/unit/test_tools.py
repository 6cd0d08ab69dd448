"""The wrapper go.mod that lets upstream modules with local replacements build."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.hack import load_script


@pytest.fixture(scope="module")
def tools() -> ModuleType:
    return load_script("tools")


def component(tools: ModuleType, name: str) -> object:
    return next(c for c in tools.COMPONENTS if c.name == name)


def test_staging_replacements_point_at_the_published_modules(tools: ModuleType) -> None:
    upstream = {
        "Go": "1.25.0",
        "Godebug": [{"Key": "default", "Value": "go1.25"}],
        "Replace": [
            {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
            {
                "Old": {"Path": "example.com/fork"},
                "New": {"Path": "example.com/fork", "Version": "v1.2.3"},
            },
        ],
    }
    kubernetes = component(tools, "kubernetes")

    go_mod = tools.wrapper_go_mod(kubernetes, upstream).splitlines()

    assert "go 1.25.0" in go_mod
    assert "godebug default=go1.25" in go_mod
    assert f"require k8s.io/kubernetes {tools.KUBERNETES_VERSION}" in go_mod
    staging = "v0." + tools.KUBERNETES_VERSION.split(".", 1)[1]
    assert f"replace k8s.io/api => k8s.io/api {staging}" in go_mod
    assert "replace example.com/fork => example.com/fork v1.2.3" in go_mod


def test_forbidden_dependency_guards_are_dropped(tools: ModuleType) -> None:
    upstream = {
        "Go": "1.26.0",
        "Replace": [
            {"Old": {"Path": "go.etcd.io/etcd/api/v3"}, "New": {"Path": "../api"}},
            {"Old": {"Path": "go.etcd.io/etcd"}, "New": {"Path": "./FORBIDDEN_DEPENDENCY"}},
        ],
    }

    go_mod = tools.wrapper_go_mod(component(tools, "etcd"), upstream)

    assert (
        f"replace go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 {tools.ETCD_VERSION}" in go_mod
    )
    assert "FORBIDDEN" not in go_mod


def test_kubernetes_binaries_carry_their_version(tools: ModuleType) -> None:
    flags = component(tools, "kubernetes").ldflags

    assert f"-X k8s.io/component-base/version.gitVersion={tools.KUBERNETES_VERSION}" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags


def test_the_real_nodes_containerd_is_2x_built_without_c_snapshotters(tools: ModuleType) -> None:
    containerd = component(tools, "containerd")

    assert tools.CONTAINERD_VERSION.startswith("v2.")
    assert containerd.binaries == ("containerd", "containerd-shim-runc-v2", "ctr")
    assert {"no_btrfs", "no_devmapper", "no_zfs"} <= set(containerd.tags)
    version = f"-X github.com/containerd/containerd/v2/version.Version={tools.CONTAINERD_VERSION}"
    assert version in containerd.ldflags


def test_the_kubelet_and_kube_proxy_are_the_control_planes_release(tools: ModuleType) -> None:
    node = component(tools, "kubernetes-node")

    assert node.binaries == ("kubelet", "kube-proxy")
    assert node.version == component(tools, "kubernetes").version
    assert node.ldflags == component(tools, "kubernetes").ldflags
