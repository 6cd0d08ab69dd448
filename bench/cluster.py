"""The benchmark's own local cluster: started fresh, reconfigured, and described.

It is a second kwokctl cluster beside the test cluster (its own name and
state directory), so a benchmark never disturbs, nor is skewed by, whatever
the tests left behind.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.cluster import restart_component
from tests.support.helm import kubectl

ROOT = Path(__file__).resolve().parent.parent
NAME = "taskmaster-bench"
STATE = ROOT / ".cluster" / "bench"
# The operator's user: audited (hack/kwok/audit-policy.yaml) so its requests
# can be counted, and in system:masters as kube-controller-manager is here,
# so the API server's priority and fairness treats the two schedulers alike.
OPERATOR_USER = "taskmaster-bench"
KCM = "kube-controller-manager"
# kube-controller-manager's client rate limit, per controller (its defaults).
DEFAULT_QPS = {"kube_api_qps": 20, "kube_api_burst": 30}
# Its CronJob controller's workers (--concurrent-cron-job-syncs, default).
CRONJOB_WORKERS = 5


def _script(*args: str) -> None:
    env = {**os.environ, "TASKMASTER_CLUSTER_NAME": NAME, "TASKMASTER_CLUSTER_STATE": str(STATE)}
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), *args], check=True, env=env, timeout=600)


@dataclass
class Cluster:
    kubeconfig: Path = STATE / "kubeconfig"
    directory: Path = STATE / "kwok" / "clusters" / NAME

    @property
    def audit_log(self) -> Path:
        return self.directory / "logs" / "audit.log"

    def up(self) -> None:
        """A fresh cluster: whatever an earlier run left is removed first."""
        _script("down")
        _script("up")

    def down(self) -> None:
        _script("down")

    def restart_controller_manager(self, rate_limit: Mapping[str, int]) -> None:
        """kube-controller-manager again, with another client rate limit for every controller.

        Returns once the new process holds its leader Lease (the killed one's
        must expire first), i.e. once its controllers run.
        """
        holder = self._kcm_holder()
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in rate_limit.items()]
        restart_component(self.directory, KCM, 0, flags)
        deadline = time.monotonic() + 120
        while self._kcm_holder() in (holder, None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{KCM} took no leadership after its restart")
            time.sleep(0.5)

    def _kcm_holder(self) -> str | None:
        try:
            lease = self.kubectl("get", "lease", "-n", "kube-system", KCM, "-o", "json")
        except RuntimeError:  # not created yet
            return None
        holder: str | None = json.loads(lease)["spec"].get("holderIdentity")
        return holder

    def kubectl(self, *args: str | Path) -> str:
        return kubectl(self.kubeconfig, *args)

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig for the operator, as user OPERATOR_USER, signed by the cluster's CA."""
        pki = self.directory / "pki"
        with warnings.catch_warnings():
            # kwokctl's CA has a serial number of 0, which cryptography warns about.
            warnings.simplefilter("ignore")
            ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR_USER),
            ]
        )
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        cert_path, key_path = STATE / f"{OPERATOR_USER}.crt", STATE / f"{OPERATOR_USER}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        config = yaml.safe_load(self.kubeconfig.read_text())
        for user in config["users"]:
            user["user"] = {"client-certificate": str(cert_path), "client-key": str(key_path)}
        path = STATE / f"{OPERATOR_USER}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def audit_offset(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def operator_requests(self, start: int, end: int) -> Counter[str]:
        """The operator's completed requests between two audit log offsets, by verb and resource."""
        requests: Counter[str] = Counter()
        with self.audit_log.open("rb") as log:
            log.seek(start)
            for line in log.read(end - start).splitlines():
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete":
                    continue
                if event.get("user", {}).get("username") != OPERATOR_USER:
                    continue
                ref = event.get("objectRef") or {}
                resource = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
                requests[f"{event['verb']} {resource}"] += 1
        return requests

    def describe(self) -> dict[str, Any]:
        """What the report records about the simulated nodes."""
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]
        return {
            "version": _tool_version("kwok"),
            "runtime": "binary",
            "nodes": len(nodes),
            "pod_duration": "100ms (pods of the steady load); burst Jobs are suspended",
        }


def _tool_version(tool: str) -> str:
    result = subprocess.run(
        [str(ROOT / ".tools" / "bin" / tool), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    match = re.search(r"v\d+\.\d+\.\d+", result.stdout + result.stderr)
    return match.group(0) if match else "unknown"


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def process_peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(peak.group(1)) / 1024 if peak else 0.0
