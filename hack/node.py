#!/usr/bin/env python3
"""A real node beside kwok's simulated ones: kubelet, kube-proxy, containerd, runc and CNI.

    hack/node.py check              exits 0 when a real node can run here, else says why
    hack/node.py apiserver-patch    the API server's kwokctl patch the node needs
    hack/node.py up | down          idempotent; `hack/cluster.sh` calls them
    hack/node.py status             exits 0 when the node is Ready
    hack/node.py footprint          what the node leaves on the host, as JSON

The kubelet and kube-proxy are the control plane's own release (`make tools`);
containerd, runc (with seccomp) and the CNI plugins are the distribution's
packages, installed as root when missing. The images of `make images` are
loaded into containerd; the sandbox image is the locally built pause image.

The node is `taskmaster-real`, tainted `taskmaster.dev/real-node:NoSchedule`
so simulated workloads never land on it. A namespace opts in with the
PodNodeSelector and PodTolerationRestriction annotations (`NAMESPACE_ANNOTATIONS`);
every pod there runs for real.

Networking stays on this machine: the node's address is its own bridge's, pods
get addresses from the bridge's subnet without masquerade, and kube-proxy
serves Services in iptables mode. The API server listens on loopback only, so
the bridge address gets a TCP relay to it: the `kubernetes` Service's endpoint,
reached by pods through kube-proxy as in any cluster.

Everything lives under `.cluster/node/` (logs stay in `.cluster/node-logs/`).
`down` ends every process, unmounts every mount, removes the bridge and its
veths, the iptables chains, the cgroups, and puts back the kernel settings the
kubelet changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".tools" / "bin"
STATE = Path(os.environ.get("TASKMASTER_CLUSTER_STATE") or ROOT / ".cluster")
CLUSTER_NAME = os.environ.get("TASKMASTER_CLUSTER_NAME") or "taskmaster"
NODE_DIR = STATE / "node"
LOGS = STATE / "node-logs"
# containerd's content and snapshots: kept across restarts, as a node's disk
# keeps its images, so that `up` loads only images it has not seen.
CONTAINERD_ROOT = STATE / "node-disk"
KUBECONFIG = STATE / "kubeconfig"
PKI = STATE / "kwok" / "clusters" / CLUSTER_NAME / "pki"
IMAGES = ROOT / ".tools" / "images.json"

NAME = "taskmaster-real"
LABEL = "taskmaster.dev/real-node"
TAINT = f"{LABEL}=true:NoSchedule"
# A namespace with these annotations runs its pods on the real node.
NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": f"{LABEL}=true",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    ),
}
BRIDGE = "tmbr0"
SUBNET = "10.244.0.0/24"
ADDRESS = "10.244.0.1"
# The API server's default Service range (the `kubernetes` Service is 10.0.0.1).
SERVICE_SUBNET = "10.0.0.0/24"
# Without per-QoS cgroups the kubelet names no parent, and containerd puts
# every container under this one (in each hierarchy).
CGROUP = "k8s.io"
CNI_BIN = Path("/usr/lib/cni")
# The shims' sockets: containerd allows at most 38 characters for this path.
SHIM_SOCKETS = Path("/run") / f"taskmaster-{hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:8]}"
# Command -> Debian package.
PACKAGES = {
    "runc": "runc",
    CNI_BIN / "bridge": "containernetworking-plugins",
    "socat": "socat",
    "iptables": "iptables",
    "conntrack": "conntrack",
}
# What the kubelet sets on start; put back on stop.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Chains the node's components create (kube-proxy, the kubelet's canaries, CNI).
CHAIN_PREFIXES = ("KUBE-", "CNI-")
# Stopped in this order: containerd last, once nothing asks it for anything.
PROCESSES = ("kubelet", "kube-proxy", "relay", "containerd")


def log(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


def run(command: Sequence[str | Path], **kwargs: object) -> str:
    result = subprocess.run(  # type: ignore[call-overload]
        [str(part) for part in command],
        check=kwargs.pop("check", True),
        text=True,
        stdout=subprocess.PIPE,
        **kwargs,
    )
    return str(result.stdout)


def quiet(command: Sequence[str | Path]) -> bool:
    done = subprocess.run([str(part) for part in command], capture_output=True, check=False)
    return done.returncode == 0


def kubectl(*args: str, check: bool = True) -> str:
    return run([BIN / "kubectl", "--kubeconfig", KUBECONFIG, *args], check=check)


# --- can it run here --------------------------------------------------------


def _missing_packages() -> list[str]:
    missing = []
    for command, package in PACKAGES.items():
        found = Path(command).exists() if isinstance(command, Path) else shutil.which(command)
        if not found:
            missing.append(package)
    return sorted(set(missing))


def why_not() -> str | None:
    """Why a real node cannot run on this machine, or None."""
    missing = _missing_packages()
    cgroups = ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/cgroup.procs")
    checks = (
        (os.environ.get("TASKMASTER_REAL_NODE", "auto") == "off", "TASKMASTER_REAL_NODE=off"),
        (sys.platform != "linux", "a real node needs Linux"),
        (os.geteuid() != 0, "a real node needs root (containers, bridges, iptables, cgroups)"),
        (not any(os.access(path, os.W_OK) for path in cgroups), "cgroups are not writable"),
        (
            bool(missing) and shutil.which("apt-get") is None,
            f"missing {', '.join(missing)} and no apt-get to install them",
        ),
        (shutil.which("go") is None, "building the sandbox image needs Go"),
        *(
            (not (BIN / tool).exists(), f"missing {BIN / tool}: run 'make tools'")
            for tool in ("kubelet", "kube-proxy", "kubectl", "containerd", "ctr")
        ),
    )
    return next((reason for failed, reason in checks if failed), None)


def ensure_packages() -> None:
    missing = _missing_packages()
    if not missing:
        return
    log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def apiserver_patch() -> str:
    """The API server's kwokctl component patch: the node's view of it."""
    args = {
        # The `kubernetes` Service's endpoint: the relay on the bridge.
        "advertise-address": ADDRESS,
        # Namespaces opt in to the real node (NAMESPACE_ANNOTATIONS).
        "enable-admission-plugins": "PodNodeSelector,PodTolerationRestriction",
        # The kubelet's API (logs) authenticates the API server by certificate.
        "kubelet-client-certificate": str(PKI / "admin.crt"),
        "kubelet-client-key": str(PKI / "admin.key"),
        # ... at the node's address: its name is in no resolver.
        "kubelet-preferred-address-types": "InternalIP,Hostname",
    }
    lines = ["- name: kube-apiserver", "  extraArgs:"]
    lines += [f"  - {{key: {key}, value: {json.dumps(value)}}}" for key, value in args.items()]
    return "\n".join(lines) + "\n"


# --- processes --------------------------------------------------------------


def _pidfile(name: str) -> Path:
    return NODE_DIR / "pids" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return ""


def start(name: str, command: Sequence[str | Path], path: str | None = None) -> None:
    env = {**os.environ, "PATH": path} if path else None
    LOGS.mkdir(parents=True, exist_ok=True)
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as output:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _pidfile(name).write_text(f"{process.pid}\n")


def stop_pid(pid: int, grace: float = 10.0) -> None:
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return


def stop(name: str) -> None:
    pidfile = _pidfile(name)
    if pidfile.exists():
        stop_pid(int(pidfile.read_text()))
        pidfile.unlink()


def our_processes() -> dict[int, str]:
    """Every process whose command line names the node's directory (shims included)."""
    marker = str(NODE_DIR)
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found[int(entry.name)] = cmdline.strip()
    return found


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        for name in PROCESSES:
            pidfile = _pidfile(name)
            if pidfile.exists() and not _alive(int(pidfile.read_text())):
                tail = "\n".join((LOGS / f"{name}.log").read_text().splitlines()[-5:])
                raise SystemExit(f"[node] {name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.25)
    raise SystemExit(f"[node] {what} did not happen within {timeout:.0f}s (logs: {LOGS})")


# --- host state -------------------------------------------------------------


def mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def cgroup_dirs() -> list[Path]:
    """The node's cgroups, in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / CGROUP
        if top.is_dir():
            found += [Path(path) for path, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def links() -> list[str]:
    return sorted(json_of(["ip", "-j", "link", "show"]), key=str)


def json_of(command: Sequence[str]) -> list[str]:
    return [item["ifname"] for item in json.loads(run(command) or "[]")]


def _iptables(binary: str) -> Iterator[str]:
    if shutil.which(f"{binary}-save") is None:
        return
    table = ""
    for line in run([f"{binary}-save"], check=False).splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith((":", "-A")):
            # Chain declarations carry packet counters: keep the name only.
            rule = line.split()[0] if line.startswith(":") else line
            yield f"{binary} {table} {rule}"


def iptables_rules() -> list[str]:
    return sorted({*_iptables("iptables"), *_iptables("ip6tables")})


def footprint() -> dict[str, list[str]]:
    """What of the node is on this host: empty lists, or the baseline, once it is down."""
    return {
        "processes": sorted(our_processes().values()),
        "mounts": sorted(
            m for m in mounts() if str(NODE_DIR) in m or str(CONTAINERD_ROOT) in m or "/netns/" in m
        ),
        "links": links(),
        "iptables": iptables_rules(),
        "cgroups": [str(path) for path in cgroup_dirs()],
        "files": [str(path) for path in (NODE_DIR, SHIM_SOCKETS) if path.exists()],
    }


# --- up ---------------------------------------------------------------------


def _openssl_cert(name: str, subject: str) -> None:
    key, csr, crt = (NODE_DIR / "pki" / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    key.parent.mkdir(parents=True, exist_ok=True)
    run(["openssl", "genrsa", "-out", key, "2048"], stderr=subprocess.DEVNULL)
    run(["openssl", "req", "-new", "-key", key, "-subj", subject, "-out", csr])
    run(
        [
            "openssl", "x509", "-req", "-in", csr, "-CA", PKI / "ca.crt", "-CAkey", PKI / "ca.key",
            "-CAcreateserial", "-CAserial", NODE_DIR / "pki" / "ca.srl", "-days", "30", "-out", crt,
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _kubeconfig(name: str) -> Path:
    server = re.search(r"server:\s*(\S+)", KUBECONFIG.read_text())
    if server is None:
        raise SystemExit(f"[node] no server in {KUBECONFIG}")
    path = NODE_DIR / f"{name}.kubeconfig"
    pki = NODE_DIR / "pki"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": server.group(1),
                            "certificate-authority": str(PKI / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": name,
                        "user": {
                            "client-certificate": str(pki / f"{name}.crt"),
                            "client-key": str(pki / f"{name}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
                "current-context": "local",
            },
            indent=2,
        )
    )
    return path


def _api_port() -> int:
    server = re.search(r"server:\s*https://[^:]+:(\d+)", KUBECONFIG.read_text())
    if server is None:
        raise SystemExit(f"[node] no https server in {KUBECONFIG}")
    return int(server.group(1))


def _containerd_config(socket: Path, pause: str) -> str:
    containerd = NODE_DIR / "containerd"
    return f"""\
version = 3
root = "{CONTAINERD_ROOT}"
state = "{containerd / "state"}"
temp = "{containerd / "tmp"}"
# NRI would listen on a socket of its own under /var/run.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{containerd / "opt"}"

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{SHIM_SOCKETS}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{pause}"

[plugins."io.containerd.cri.v1.runtime"]
  # Processes here may not lower an oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{CNI_BIN}"]
  conf_dir = "{NODE_DIR / "cni" / "net.d"}"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{NODE_DIR / "run" / "runc"}"
"""


def _cni_config() -> str:
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        # Pods talk to this machine and each other; nothing is masqueraded out.
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET, "gateway": ADDRESS}]],
            # Pods reach the bridge's subnet and Services, and no other address:
            # no default route.
            "routes": [{"dst": SERVICE_SUBNET}],
            "dataDir": str(NODE_DIR / "cni" / "ipam"),
        },
    }
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    return json.dumps(
        {"cniVersion": "0.4.0", "name": "taskmaster", "plugins": [bridge, portmap]}, indent=2
    )


def _kubelet_config(socket: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The API server reaches the kubelet (logs) on the bridge only.
        "address": ADDRESS,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{socket}",
        # cgroups v1 without systemd: plain cgroupfs, pods under one cgroup of ours.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        # No cluster DNS, and no host resolver handed to pods.
        "resolvConf": "",
        "podLogsDir": str(NODE_DIR / "pod-logs"),
        "volumePluginDir": str(NODE_DIR / "volume-plugins"),
        "registerWithTaints": [{"key": LABEL, "value": "true", "effect": "NoSchedule"}],
        # The images are loaded, never pulled: keep them whatever the disk says.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi"},
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
    }
    return json.dumps(config, indent=2)


def _kube_proxy_config() -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(NODE_DIR / "kube-proxy.kubeconfig")},
        "hostnameOverride": NAME,
        "bindAddress": ADDRESS,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{ADDRESS}/32"],
        "clusterCIDR": SUBNET,
        # No global kernel changes: no localhost NodePorts (route_localnet),
        # conntrack limits and timeouts left as they are.
        "iptables": {"localhostNodePorts": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return json.dumps(config, indent=2)


def _bridge() -> None:
    if not quiet(["ip", "link", "show", BRIDGE]):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    if ADDRESS not in run(["ip", "-o", "addr", "show", "dev", BRIDGE]):
        run(["ip", "addr", "add", f"{ADDRESS}/{SUBNET.split('/')[1]}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def _load_images(references: list[str]) -> None:
    present = set(ctr("images", "ls", "--quiet").split())
    archives = NODE_DIR / "images"
    archives.mkdir(parents=True, exist_ok=True)
    for reference in (r for r in references if r not in present):
        log(f"loading {reference}")
        archive = archives / (reference.rsplit("/", 1)[-1].replace(":", "_") + ".tar")
        run(["buildah", "push", "--quiet", reference, f"docker-archive:{archive}:{reference}"])
        ctr("images", "import", str(archive))
        archive.unlink()
    missing = set(references) - set(ctr("images", "ls", "--quiet").split())
    if missing:
        raise SystemExit(f"[node] containerd did not load {', '.join(sorted(missing))}")


def _images() -> dict[str, str]:
    run([sys.executable, ROOT / "hack" / "images.py", "--output", IMAGES])
    images: dict[str, str] = json.loads(IMAGES.read_text())
    return images


def node_ready() -> bool:
    if not KUBECONFIG.exists():
        return False
    condition = kubectl(
        "get", "node", NAME, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )  # fmt: skip
    return condition.strip() == "True"


def running() -> bool:
    pidfile = _pidfile("kubelet")
    return pidfile.exists() and _alive(int(pidfile.read_text())) and node_ready()


def up() -> None:
    reason = why_not()
    if reason:
        raise SystemExit(f"[node] cannot run a real node here: {reason}")
    if running():
        log(f"node {NAME} is already up")
        return
    if NODE_DIR.exists():
        down()
    started = time.monotonic()
    ensure_packages()
    images = _images()
    NODE_DIR.mkdir(parents=True)
    for sub in ("pids", "run", "cni/net.d", "pod-logs", "volume-plugins", "kubelet"):
        (NODE_DIR / sub).mkdir(parents=True, exist_ok=True)
    (NODE_DIR / "baseline.json").write_text(
        json.dumps(
            {
                "sysctls": {key: Path(f"/proc/sys/{key}").read_text().strip() for key in SYSCTLS},
                "iptables": iptables_rules(),
                "cgroups": [str(path) for path in cgroup_dirs()],
            }
        )
    )
    _bridge()
    _openssl_cert("kubelet", f"/O=system:nodes/CN=system:node:{NAME}")
    _openssl_cert("kube-proxy", "/CN=system:kube-proxy")
    kubelet_kubeconfig = _kubeconfig("kubelet")
    _kubeconfig("kube-proxy")
    socket = NODE_DIR / "run" / "containerd.sock"
    pause = images["taskmaster-pause"]
    (NODE_DIR / "containerd.toml").write_text(_containerd_config(socket, pause))
    (NODE_DIR / "cni" / "net.d" / "10-taskmaster.conflist").write_text(_cni_config())
    (NODE_DIR / "kubelet.yaml").write_text(_kubelet_config(socket))
    (NODE_DIR / "kube-proxy.yaml").write_text(_kube_proxy_config())

    # containerd finds its shim beside itself and Debian's runc (with seccomp) on PATH.
    binaries = Path(os.path.realpath(BIN / "containerd")).parent
    path = f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}"
    start("containerd", [BIN / "containerd", "--config", NODE_DIR / "containerd.toml"], path=path)
    wait_for("containerd's socket", socket.exists, 30)
    _load_images([ref for name, ref in images.items() if name != "base"])
    port = _api_port()
    listen = f"TCP-LISTEN:{port},bind={ADDRESS},reuseaddr,fork"
    start("relay", ["socat", listen, f"TCP:127.0.0.1:{port}"])
    start("kube-proxy", [BIN / "kube-proxy", "--config", NODE_DIR / "kube-proxy.yaml", "--v=1"])
    start(
        "kubelet",
        [
            BIN / "kubelet",
            "--config", NODE_DIR / "kubelet.yaml",
            "--kubeconfig", kubelet_kubeconfig,
            "--root-dir", NODE_DIR / "kubelet",
            "--cert-dir", NODE_DIR / "kubelet" / "pki",
            "--hostname-override", NAME,
            "--node-ip", ADDRESS,
            "--node-labels", f"{LABEL}=true",
            "--v=1",
        ],
    )  # fmt: skip
    wait_for(f"node {NAME} Ready", node_ready, 120)
    log(f"node {NAME} is Ready in {time.monotonic() - started:.0f}s (logs: {LOGS})")


# --- down -------------------------------------------------------------------


def ctr(*args: str) -> str:
    """containerd's own client, in the namespace of the kubelet's containers."""
    socket = NODE_DIR / "run" / "containerd.sock"
    if not socket.exists():
        return ""
    # Its warnings (cgroup v1 is deprecated) are not ours to print.
    command = [BIN / "ctr", "--address", socket, "-n", "k8s.io", *args]
    return run(command, check=False, stderr=subprocess.DEVNULL)


def _drain() -> None:
    """Pods deleted through the API, so the kubelet stops them as it would anywhere."""
    if not KUBECONFIG.exists() or not kubectl("get", "node", NAME, "-o", "name", check=False):
        return
    # Cordoned first: a Deployment's replacement pods must not land here again.
    kubectl("cordon", NAME, check=False)
    kubectl(
        "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NAME}",
        "--grace-period=1", "--wait=false", check=False,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "RUNNING" in ctr("tasks", "ls") and time.monotonic() < deadline:
        time.sleep(0.5)
    kubectl("delete", "node", NAME, "--wait=false", check=False)


def _end_processes() -> None:
    """The node's daemons, then whatever still runs: shims and containers."""
    for name in PROCESSES[:-1]:
        stop(name)
    if (BIN / "kube-proxy").exists():
        # kube-proxy removes its own rules.
        quiet([BIN / "kube-proxy", "--cleanup"])
    # What the kubelet did not clean up: the disk keeps images, not containers.
    for task in ctr("tasks", "ls", "-q").split():
        ctr("tasks", "kill", "--signal", "SIGKILL", task)
        ctr("tasks", "delete", "--force", task)
    for container in ctr("containers", "ls", "-q").split():
        ctr("containers", "delete", container)
    stop(PROCESSES[-1])
    for pid in our_processes():
        stop_pid(pid, grace=2)
    for path in cgroup_dirs():
        procs = path / "cgroup.procs"
        for pid in procs.read_text().split() if procs.exists() else ():
            stop_pid(int(pid), grace=2)


def _remove_network() -> None:
    """Unmounting the network namespaces ends the pods' veths; the bridge goes last."""
    ours = (m for m in mounts() if m.startswith((str(NODE_DIR), str(CONTAINERD_ROOT))))
    for point in sorted(ours, key=len, reverse=True):
        quiet(["umount", "--lazy", point])
    if quiet(["ip", "link", "show", BRIDGE]):
        for link in json_of(["ip", "-j", "link", "show", "master", BRIDGE]):
            quiet(["ip", "link", "delete", link])
        quiet(["ip", "link", "delete", BRIDGE])


def _remove_cgroups(kept: set[Path]) -> None:
    for path in cgroup_dirs():
        if path in kept:
            continue
        try:
            path.rmdir()
        except OSError as error:
            log(f"cannot remove {path}: {error}")


def _remove_chains(baseline: set[str]) -> None:
    """Chains of the node's components (and the rules that jump to them) added since `up`."""
    added = [rule.split(" ", 2) for rule in iptables_rules() if rule not in baseline]
    chains = {
        (tool, table, text[1:])
        for tool, table, text in added
        if text.startswith(":") and text[1:].startswith(CHAIN_PREFIXES)
    }
    for tool, table, text in (rule.split(" ", 2) for rule in iptables_rules()):
        target = re.search(r" -j (\S+)", text)
        if text.startswith("-A") and target and (tool, table, target.group(1)) in chains:
            quiet([tool, "-t", table, "-D", *text.split()[1:]])
    for flag in ("-F", "-X"):
        for tool, table, chain in sorted(chains):
            quiet([tool, "-t", table, flag, chain])


def down() -> None:
    if not NODE_DIR.exists():
        return
    baseline = {}
    if (NODE_DIR / "baseline.json").exists():
        baseline = json.loads((NODE_DIR / "baseline.json").read_text())
    _drain()
    _end_processes()
    _remove_network()
    _remove_cgroups({Path(path) for path in baseline.get("cgroups", ())})
    _remove_chains(set(baseline.get("iptables", ())))
    for key, value in baseline.get("sysctls", {}).items():
        Path(f"/proc/sys/{key}").write_text(value + "\n")
    shutil.rmtree(SHIM_SOCKETS, ignore_errors=True)
    shutil.rmtree(NODE_DIR, ignore_errors=True)
    log(f"node {NAME} is down")


def main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else ""
    if command == "check":
        reason = why_not()
        if reason:
            print(reason)
            return 1
        return 0
    if command == "apiserver-patch":
        print(apiserver_patch(), end="")
    elif command == "up":
        up()
    elif command == "down":
        down()
    elif command == "status":
        return 0 if running() else 1
    elif command == "footprint":
        print(json.dumps(footprint(), indent=2))
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
