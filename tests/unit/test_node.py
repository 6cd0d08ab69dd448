"""The real node's configuration keeps it on this machine: it listens on loopback and
its own bridge only, pods cannot route anywhere else, and no global setting changes."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.support.hack import load_script

SOCKET = Path("/nonexistent/containerd.sock")


@pytest.fixture(scope="module")
def node() -> ModuleType:
    return load_script("node")


def listening_addresses(config: dict[str, object], keys: tuple[str, ...]) -> list[str]:
    """The addresses the component binds: each key must be set (unset means every interface)."""
    return [str(config[key]).rsplit(":", 1)[0] for key in keys]


def test_the_kubelet_and_kube_proxy_listen_on_loopback_or_the_bridge_only(
    node: ModuleType,
) -> None:
    kubelet = json.loads(node._kubelet_config(SOCKET))
    proxy = json.loads(node._kube_proxy_config(SOCKET.with_name("kube-proxy.kubeconfig")))

    addresses = listening_addresses(kubelet, ("address", "healthzBindAddress"))
    addresses += listening_addresses(
        proxy, ("bindAddress", "healthzBindAddress", "metricsBindAddress")
    )
    for address in addresses:
        assert address in {"127.0.0.1", node.ADDRESS}, address
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert proxy["nodePortAddresses"] == [f"{node.ADDRESS}/32"]


def test_pods_route_to_the_bridge_and_services_only_and_are_never_masqueraded(
    node: ModuleType,
) -> None:
    bridge = json.loads(node._cni_config())["plugins"][0]

    assert bridge["ipMasq"] is False
    assert bridge.get("isDefaultGateway") is not True
    routes = [ipaddress.ip_network(route["dst"]) for route in bridge["ipam"]["routes"]]
    assert routes == [ipaddress.ip_network(node.SERVICE_SUBNET)]
    assert ipaddress.ip_address(node.ADDRESS) in ipaddress.ip_network(node.SUBNET)


def test_kube_proxy_changes_no_global_kernel_setting(node: ModuleType) -> None:
    proxy = json.loads(node._kube_proxy_config(SOCKET.with_name("kube-proxy.kubeconfig")))

    # localhost NodePorts would turn on route_localnet for every interface.
    assert proxy["iptables"]["localhostNodePorts"] is False
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert proxy["conntrack"]["min"] == 0


def test_the_api_server_advertises_the_bridge_and_lets_namespaces_opt_in(
    node: ModuleType,
) -> None:
    patch = yaml.safe_load(node.apiserver_patch())[0]
    args = {arg["key"]: arg["value"] for arg in patch["extraArgs"]}

    assert patch["name"] == "kube-apiserver"
    assert args["advertise-address"] == node.ADDRESS
    assert set(args["enable-admission-plugins"].split(",")) == {
        "PodNodeSelector",
        "PodTolerationRestriction",
    }
    selector = node.NAMESPACE_ANNOTATIONS["scheduler.alpha.kubernetes.io/node-selector"]
    assert selector == f"{node.LABEL}=true"


def test_the_node_can_be_turned_off(node: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMASTER_REAL_NODE", "off")

    assert node.why_not() == "TASKMASTER_REAL_NODE=off"


def test_teardown_reads_kube_proxys_quoted_comments_as_one_argument(node: ModuleType) -> None:
    rule = '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'

    words, target = node.rule_jump(rule)

    assert target == "KUBE-SERVICES"
    assert words[words.index("--comment") + 1] == "kubernetes service portals"
