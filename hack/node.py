#!/usr/bin/env python3
"""A real node beside kwok's simulated ones: kubelet, kube-proxy, containerd, runc and CNI.

    hack/node.py check              exits 0 when a real node can run here, else says why
    hack/node.py apiserver-patch    the API server's kwokctl patch the node needs
    hack/node.py up | down          idempotent; `hack/cluster.sh` calls them
    hack/node.py status             exits 0 when the node runs and is Ready
    hack/node.py footprint          what of the node is on this machine, as JSON

The kubelet, kube-proxy and containerd come from their Go modules (`make
tools`), of the release the control plane runs; runc (with seccomp) and the CNI
plugins are the distribution's packages, installed as root when missing. The
images of `make images` are loaded into containerd; the sandbox image is the
locally built pause image.

The node is `taskmaster-real`, tainted `taskmaster.dev/real-node:NoSchedule`
so simulated workloads never land on it. A namespace opts in with the
PodNodeSelector and PodTolerationRestriction annotations (`NAMESPACE_ANNOTATIONS`);
every pod there runs for real.

Networking stays on this machine: the node's address is its own bridge's, pods
get addresses from the bridge's subnet without masquerade or default route,
and kube-proxy serves Services in iptables mode. The API server listens on
loopback only, so the bridge address gets a TCP relay to it: the `kubernetes`
Service's endpoint, reached by pods through kube-proxy as in any cluster.

The node's files live under `.cluster/node/`, its images under
`.cluster/node-disk/` and its logs under `.cluster/node-logs/`. `down` ends
every process, unmounts every mount, removes the bridge and its veths, the
iptables chains, the containers' cgroups and what the kubelet and CNI wrote
elsewhere, and puts back the kernel settings they changed (docs/real-node.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
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
# A namespace with these annotations runs its pods on the real node.
NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": f"{LABEL}=true",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    ),
}
# One real node per machine: these names are the machine's, not the checkout's.
BRIDGE = "tmbr0"
SUBNET = "10.244.0.0/24"
ADDRESS = "10.244.0.1"
# The API server's default Service range (the `kubernetes` Service is 10.0.0.1).
SERVICE_SUBNET = "10.0.0.0/24"
# Drops what reaches the node's address through any other interface.
GUARD = "TASKMASTER-NODE"
# Without per-QoS cgroups the kubelet names no parent, and containerd puts
# every container under this one (in each v1 hierarchy).
CGROUP = "k8s.io"
CNI_BIN = Path("/usr/lib/cni")
# The shims' sockets: containerd allows at most 38 characters for this path.
SHIM_SOCKETS = Path("/run") / f"taskmaster-{hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:8]}"
# Where the kubelet and libcni write whatever their configuration says: the
# device plugins' socket, the containers' log links, CNI's result cache.
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/var/lib/cni"))
# Command -> Debian package.
PACKAGES = {
    "runc": "runc",
    CNI_BIN / "bridge": "containernetworking-plugins",
    "socat": "socat",
    "iptables": "iptables",
    "conntrack": "conntrack",
}
# What the kubelet (and the CNI bridge, ip_forward) set on start; put back on stop.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Chains the node's components create (kube-proxy, the kubelet's canaries, CNI, the guard).
CHAIN_PREFIXES = ("KUBE-", "CNI-", GUARD)
# The daemons, in the order they stop: containerd last, once nothing asks it for anything.
PROCESSES = ("kubelet", "kube-proxy", "relay", "containerd")
# Executables of the node's processes (shims included), for finding them by name.
EXECUTABLES = {"kubelet", "kube-proxy", "socat", "containerd", "containerd-shim-runc-v2", "runc"}


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


def ctr(*args: str) -> str:
    """containerd's own client, in the namespace of the kubelet's containers."""
    socket = NODE_DIR / "run" / "containerd.sock"
    if not socket.exists():
        return ""
    # Its warnings (cgroup v1 is deprecated) are not ours to print.
    command = [BIN / "ctr", "--address", socket, "-n", "k8s.io", *args]
    return run(command, check=False, stderr=subprocess.DEVNULL)


# --- can it run here --------------------------------------------------------


def _missing_packages() -> list[str]:
    missing = []
    for command, package in PACKAGES.items():
        found = Path(command).exists() if isinstance(command, Path) else shutil.which(command)
        if not found:
            missing.append(package)
    return sorted(set(missing))


def _sysctl(key: str) -> str:
    path = Path("/proc/sys") / key
    return path.read_text().strip() if path.exists() else ""


def why_not() -> str | None:
    """Why a real node cannot run on this machine, or None."""
    missing = _missing_packages()
    foreign_bridge = Path(f"/sys/class/net/{BRIDGE}").exists() and not NODE_DIR.exists()
    checks = (
        (os.environ.get("TASKMASTER_REAL_NODE", "auto") == "off", "TASKMASTER_REAL_NODE=off"),
        (sys.platform != "linux", "a real node needs Linux"),
        (os.geteuid() != 0, "a real node needs root (containers, bridges, iptables, cgroups)"),
        (
            not os.access("/sys/fs/cgroup/memory", os.W_OK),
            "a real node needs writable cgroups v1 (hybrid); cgroups v2 is not set up here",
        ),
        (
            _sysctl("net/bridge/bridge-nf-call-iptables") != "1",
            "Services between pods on one bridge need net.bridge.bridge-nf-call-iptables=1",
        ),
        (foreign_bridge, f"a bridge {BRIDGE} exists that is not this checkout's node"),
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
        # The kubelet's API (logs) authenticates the API server by certificate ...
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


def _started(pid: int) -> str:
    """When the process started (clock ticks since boot), or "" when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    # State (field 3) and starttime (field 22), counted after the command's name.
    return "" if fields[0] in {"Z", "X"} else fields[19]


def _pid(name: str) -> int | None:
    """The daemon's pid while that very process runs (not a later one with its number)."""
    try:
        pid, started = _pidfile(name).read_text().split()
        return int(pid) if _started(int(pid)) == started else None
    except (OSError, ValueError):
        return None


def start(name: str, command: Sequence[str | Path], path: str | None = None) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / f"{name}.log").open("ab") as output:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PATH": path} if path else None,
        )
    _pidfile(name).write_text(f"{process.pid} {_started(process.pid)}\n")


def _signal(pid: int, signum: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, grace: float = 10.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (to its process group, if `group`)."""
    started = _started(pid)
    _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    while started and _started(pid) == started and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(pid, signal.SIGKILL, group)


def stop(name: str) -> None:
    pid = _pid(name)
    if pid is not None:
        # Each daemon leads its own session: the relay's forks go with it.
        stop_pid(pid, group=True)
    _pidfile(name).unlink(missing_ok=True)


def our_processes() -> dict[int, str]:
    """The node's processes, shims included: one of its programs, naming its directory."""
    marker = f"{NODE_DIR}{os.sep}"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            executable = Path(os.readlink(entry / "exe")).name
        except OSError:
            continue
        if executable in EXECUTABLES and any(marker in arg for arg in argv):
            found[int(entry.name)] = " ".join(argv).strip()
    return found


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        for name in PROCESSES:
            if _pidfile(name).exists() and _pid(name) is None:
                tail = "\n".join((LOGS / f"{name}.log").read_text().splitlines()[-5:])
                raise SystemExit(f"[node] {name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.25)
    raise SystemExit(f"[node] {what} did not happen within {timeout:.0f}s (logs: {LOGS})")


# --- host state -------------------------------------------------------------


def mounts() -> list[str]:
    return [
        line.split()[4].replace("\\040", " ")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]


def our_mounts() -> list[str]:
    """Mounts of the node: root filesystems, network namespaces, volumes; deepest first."""
    ours = [
        point
        for point in mounts()
        if Path(point).is_relative_to(NODE_DIR) or Path(point).is_relative_to(CONTAINERD_ROOT)
    ]
    return sorted(ours, key=len, reverse=True)


def cgroup_dirs() -> list[Path]:
    """Every cgroup under containerd's parent, in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / CGROUP
        if top.is_dir() and not hierarchy.is_symlink():
            found += [Path(path) for path, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def links(*selector: str) -> list[str]:
    """Names of the network links (`ip link show` with a selector, e.g. master BRIDGE)."""
    listing = json.loads(run(["ip", "-j", "link", "show", *selector], check=False) or "[]")
    return sorted(link["ifname"] for link in listing)


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


def host_files() -> list[str]:
    return sorted(
        str(path) for top in HOST_PATHS if top.exists() for path in [top, *top.rglob("*")]
    )


def footprint() -> dict[str, list[str]]:
    """What of the node is on this machine; the same as before `up`, once it is down."""
    return {
        "processes": sorted(our_processes().values()),
        "mounts": sorted([*our_mounts(), *(m for m in mounts() if "/netns/" in m)]),
        "links": links(),
        "iptables": iptables_rules(),
        "cgroups": [str(path) for path in cgroup_dirs()],
        "files": [str(path) for path in (NODE_DIR, SHIM_SOCKETS) if path.exists()] + host_files(),
        "sysctls": [f"{key}={_sysctl(key)}" for key in SYSCTLS],
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


def _api_server() -> tuple[str, int]:
    """The API server's URL in the cluster's kubeconfig, and its port."""
    server = re.search(r"server:\s*(https://[^:\s]+:(\d+))", KUBECONFIG.read_text())
    if server is None:
        raise SystemExit(f"[node] no https server in {KUBECONFIG}")
    return server.group(1), int(server.group(2))


def _kubeconfig(name: str) -> Path:
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
                            "server": _api_server()[0],
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

[plugins."io.containerd.grpc.v1.cri"]
  # The kubelet proxies exec, attach and port-forward to this server.
  stream_server_address = "127.0.0.1"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{pause}"

[plugins."io.containerd.cri.v1.runtime"]
  # Processes here may not lower an oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".cni]
  # Brings up the pods' loopback itself: no CNI cache entries for it.
  use_internal_loopback = true
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


def _kube_proxy_config(kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
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
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{ADDRESS}/{SUBNET.split('/')[1]}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # The node's address answers on its bridge (and to this machine) only:
    # binding to it must not open a port to the machine's other interfaces.
    run(["iptables", "-N", GUARD])
    for rule in (["-i", BRIDGE, "-j", "RETURN"], ["-i", "lo", "-j", "RETURN"], ["-j", "DROP"]):
        run(["iptables", "-A", GUARD, *rule])
    run(["iptables", "-I", "INPUT", "-d", ADDRESS, "-j", GUARD])


def _load_images(references: list[str]) -> None:
    """Load what the disk lacks; drop tags of ours that no build lists any more."""
    present = set(ctr("images", "ls", "--quiet").split())
    for stale in present - set(references):
        if stale.startswith("localhost/taskmaster-"):
            ctr("images", "rm", stale)
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
    return all(_pid(name) is not None for name in PROCESSES) and node_ready()


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
    try:
        _up()
    except BaseException:
        log(f"node {NAME} failed to start: stopping what did start (logs: {LOGS})")
        down()
        raise
    log(f"node {NAME} is Ready in {time.monotonic() - started:.0f}s (logs: {LOGS})")


def _up() -> None:
    ensure_packages()
    images = _images()
    for sub in ("pids", "run", "cni/net.d", "pod-logs", "volume-plugins", "kubelet"):
        (NODE_DIR / sub).mkdir(parents=True, exist_ok=True)
    # Written before anything changes, so that `down` knows what was there.
    (NODE_DIR / "baseline.json").write_text(
        json.dumps(
            {
                "sysctls": {key: _sysctl(key) for key in SYSCTLS},
                "iptables": iptables_rules(),
                "cgroups": [str(path) for path in cgroup_dirs()],
                "files": host_files(),
            }
        )
    )
    _bridge()
    _openssl_cert("kubelet", f"/O=system:nodes/CN=system:node:{NAME}")
    _openssl_cert("kube-proxy", "/CN=system:kube-proxy")
    socket = NODE_DIR / "run" / "containerd.sock"
    (NODE_DIR / "containerd.toml").write_text(
        _containerd_config(socket, images["taskmaster-pause"])
    )
    (NODE_DIR / "cni" / "net.d" / "10-taskmaster.conflist").write_text(_cni_config())
    (NODE_DIR / "kubelet.yaml").write_text(_kubelet_config(socket))
    kubelet_kubeconfig = _kubeconfig("kubelet")
    (NODE_DIR / "kube-proxy.yaml").write_text(_kube_proxy_config(_kubeconfig("kube-proxy")))

    # containerd finds its shim beside itself and Debian's runc (with seccomp) on PATH.
    binaries = Path(os.path.realpath(BIN / "containerd")).parent
    path = f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}"
    start("containerd", [BIN / "containerd", "--config", NODE_DIR / "containerd.toml"], path=path)
    wait_for("containerd's socket", socket.exists, 30)
    _load_images([ref for name, ref in images.items() if name != "base"])
    port = _api_server()[1]
    # Its error log names the node's directory, as every process of the node does.
    relay = ["socat", "-lf", NODE_DIR / "run" / "relay.log"]
    start(
        "relay",
        [*relay, f"TCP-LISTEN:{port},bind={ADDRESS},reuseaddr,fork", f"TCP:127.0.0.1:{port}"],
    )
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


# --- down -------------------------------------------------------------------


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


def _our_containers() -> set[str]:
    """IDs of the node's containers: containerd's list, and its tasks' state directories."""
    tasks = NODE_DIR / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
    found = set(ctr("containers", "ls", "--quiet").split())
    return found | ({path.name for path in tasks.iterdir()} if tasks.is_dir() else set())


def _container_cgroups(containers: set[str]) -> list[Path]:
    return [path for path in cgroup_dirs() if containers & set(path.parts)]


def _end_processes(containers: set[str]) -> None:
    """The node's daemons, then whatever still runs: shims and containers."""
    for name in PROCESSES[:-1]:
        stop(name)
    # What the kubelet did not clean up: the disk keeps images, not containers.
    for container in containers:
        ctr("tasks", "kill", "--signal", "SIGKILL", container)
        ctr("tasks", "delete", "--force", container)
        ctr("containers", "delete", container)
    stop(PROCESSES[-1])
    for pid in our_processes():
        stop_pid(pid, grace=2)
    for path in _container_cgroups(containers):
        procs = path / "cgroup.procs"
        for pid in procs.read_text().split() if procs.exists() else ():
            stop_pid(int(pid), grace=2)


def _remove_network() -> None:
    """Unmounting the network namespaces ends the pods' veths; the bridge goes last."""
    for point in our_mounts():
        quiet(["umount", "--lazy", point])
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        for link in links("master", BRIDGE):
            quiet(["ip", "link", "delete", link])
        quiet(["ip", "link", "delete", BRIDGE])


def _remove_cgroups(containers: set[str], kept: set[Path]) -> None:
    """The containers' cgroups, and containerd's parent if `up` created it."""
    ours = _container_cgroups(containers)
    ours += [path for path in cgroup_dirs() if path.name == CGROUP and path not in kept]
    for path in ours:
        try:
            path.rmdir()
        except OSError as error:
            log(f"cannot remove {path}: {error}")


def rule_jump(rule: str) -> tuple[list[str], str]:
    """A rule of iptables-save as arguments (its comments are quoted, as for a shell),
    and the chain it jumps to ("" for none)."""
    words = shlex.split(rule)
    return words, words[words.index("-j") + 1] if "-j" in words else ""


def _remove_chains(baseline: set[str]) -> None:
    """Chains of the node's components added since `up`, and the rules that jump to them."""
    added = [rule.split(" ", 2) for rule in iptables_rules() if rule not in baseline]
    chains = {
        (tool, table, text[1:])
        for tool, table, text in added
        if text.startswith(":") and text[1:].startswith(CHAIN_PREFIXES)
    }
    for tool, table, text in (rule.split(" ", 2) for rule in iptables_rules()):
        words, target = rule_jump(text)
        if words[0] == "-A" and (tool, table, target) in chains:
            quiet([tool, "-t", table, "-D", *words[1:]])
    for flag in ("-F", "-X"):
        for tool, table, chain in sorted(chains):
            quiet([tool, "-t", table, flag, chain])


def _remove_host_files(baseline: set[str]) -> None:
    """What the kubelet and libcni wrote outside the node's directories since `up`."""
    for path in sorted(set(host_files()) - baseline, key=len, reverse=True):
        entry = Path(path)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def down() -> None:
    if not NODE_DIR.exists():
        return
    try:
        baseline = json.loads((NODE_DIR / "baseline.json").read_text())
    except (OSError, ValueError):
        # `up` stopped before changing anything on the host.
        baseline = None
    _drain()
    containers = _our_containers()
    _end_processes(containers)
    _remove_network()
    if baseline is not None:
        _remove_cgroups(containers, {Path(path) for path in baseline["cgroups"]})
        _remove_chains(set(baseline["iptables"]))
        _remove_host_files(set(baseline["files"]))
        for key, value in baseline["sysctls"].items():
            if value and _sysctl(key) != value:
                (Path("/proc/sys") / key).write_text(value + "\n")
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
