"""`task.http` in the real worker image against an HTTP server pod, through its Service."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support import helm
from tests.support.real import pod_of_job, pod_until, ready, run_once
from tests.support.tasks import Tasks, history

# Answers by path: /ok 200, /missing 404, /flaky/<key> 503 the first time per key
# then 200; /seen lists the headers of every request so far.
SERVER = """
import collections, http.server, json
calls = collections.Counter()
seen = []
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/seen":
            return self.answer(200, json.dumps(seen))
        seen.append({"path": self.path, "headers": dict(self.headers)})
        calls[self.path] += 1
        if self.path == "/ok":
            return self.answer(200, '{"hello": "from the server"}')
        if self.path.startswith("/flaky/"):
            return self.answer(503 if calls[self.path] == 1 else 200, "flaky")
        return self.answer(404, "no such page")
    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


@dataclass(frozen=True)
class Server:
    url: str  # through the Service (kube-proxy)
    pod_url: str  # for the test's own reads, from the host over the bridge

    def seen(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.pod_url}/seen", timeout=10) as response:  # noqa: S310
            found: list[dict[str, Any]] = json.load(response)
            return found


@pytest.fixture(scope="module")
def server(core_v1: client.CoreV1Api, release: helm.Release, worker_image: str) -> Iterator[Server]:
    namespace, name = release.namespace, "http-server"
    core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"server.py": SERVER}),
    )
    container = client.V1Container(
        name="server",
        image=worker_image,
        command=["python", "/srv/server.py"],
        ports=[client.V1ContainerPort(container_port=8080)],
        readiness_probe=client.V1Probe(
            tcp_socket=client.V1TCPSocketAction(port=8080), period_seconds=1
        ),
        volume_mounts=[client.V1VolumeMount(name="script", mount_path="/srv")],
        security_context=client.V1SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(
            containers=[container],
            volumes=[
                client.V1Volume(name="script", config_map=client.V1ConfigMapVolumeSource(name=name))
            ],
        ),
    )
    core_v1.create_namespaced_pod(namespace, pod)
    service = core_v1.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )
    running = pod_until(
        lambda: core_v1.read_namespaced_pod(name, namespace), ready, "the HTTP server pod Ready"
    )
    yield Server(f"http://{service.spec.cluster_ip}", f"http://{running.status.pod_ip}:8080")
    core_v1.delete_namespaced_service(name, namespace)
    core_v1.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    core_v1.delete_namespaced_config_map(name, namespace)


def run_http(tasks: Tasks, http: dict[str, Any]) -> dict[str, Any]:
    return run_once(tasks, {"task": {"http": http}}, timeout=90)


def test_a_200_succeeds_and_the_workers_summary_reaches_the_history(
    real_tasks: Tasks, server: Server
) -> None:
    task = run_http(real_tasks, {"url": f"{server.url}/ok"})

    entry = history(task)[0]
    assert entry["result"] == "Succeeded", entry
    # The worker's JSON, read by the kubelet from the termination log.
    summary = json.loads(entry["message"])
    assert summary["ok"] is True
    assert summary["status"] == 200
    assert "from the server" in summary["excerpt"]


def test_a_503_then_200_is_retried_by_the_worker_and_succeeds(
    real_tasks: Tasks, server: Server
) -> None:
    key = uuid.uuid4().hex
    task = run_http(real_tasks, {"url": f"{server.url}/flaky/{key}"})

    calls = [request for request in server.seen() if request["path"] == f"/flaky/{key}"]
    assert len(calls) == 2
    entry = history(task)[0]
    assert entry["result"] == "Succeeded", history(task)
    summary = json.loads(entry["message"])
    assert (summary["attempts"], summary["status"]) == (2, 200)


def test_a_404_fails_the_run(real_tasks: Tasks, server: Server) -> None:
    task = run_http(real_tasks, {"url": f"{server.url}/missing"})

    entry = history(task)[0]
    assert entry["result"] == "Failed", entry
    assert "404" in entry["message"]


def test_a_header_from_a_secret_is_sent_and_never_shown(
    core_v1: client.CoreV1Api,
    batch_v1: client.BatchV1Api,
    real_tasks: Tasks,
    server: Server,
    kubeconfig: Path,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    core_v1.create_namespaced_secret(
        real_tasks.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="api-token"), string_data={"token": secret}
        ),
    )
    header = {"secretKeyRef": {"name": "api-token", "key": "token"}}
    task = run_http(real_tasks, {"url": f"{server.url}/ok", "headers": {"X-Token": header}})

    entry = history(task)[0]
    assert entry["result"] == "Succeeded", entry
    sent = [r["headers"].get("X-Token") for r in server.seen() if r["path"] == "/ok"]
    assert secret in sent
    namespace = real_tasks.namespace
    job = helm.kubectl(kubeconfig, "get", "job", entry["jobName"], "-n", namespace, "-o", "yaml")
    pod = pod_of_job(core_v1, namespace, entry["jobName"])
    pod_yaml = helm.kubectl(
        kubeconfig, "get", "pod", pod.metadata.name, "-n", namespace, "-o", "yaml"
    )
    logs = core_v1.read_namespaced_pod_log(pod.metadata.name, namespace)
    for where, text in {
        "the Job": job,
        "the pod": pod_yaml,
        "the logs": logs,
        "the task": json.dumps(task),
    }.items():
        assert secret not in text, f"the Secret's value is in {where}"
    assert "X-Token" in job  # the header itself is there, its value is not


def test_http_runs_are_admitted_and_run_where_restricted_pod_security_is_enforced(
    core_v1: client.CoreV1Api, restricted_tasks: Tasks, server: Server, worker_image: str
) -> None:
    namespace = restricted_tasks.namespace
    # The namespace does enforce it: a pod without the restricted settings is refused.
    plain = client.V1Pod(
        metadata=client.V1ObjectMeta(name="plain"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image=worker_image)]),
    )
    with pytest.raises(client.ApiException) as refused:
        core_v1.create_namespaced_pod(namespace, plain)
    assert refused.value.status == 403
    assert "restricted" in str(refused.value.body)

    task = run_http(restricted_tasks, {"url": f"{server.url}/ok"})

    entry = history(task)[0]
    assert entry["result"] == "Succeeded", entry
