"""Namespaces for tests: created, and usable for pods before they are handed out."""

from __future__ import annotations

from kubernetes import client

from tests.support.wait import until


def create_namespace(
    core_v1: client.CoreV1Api,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    metadata = client.V1ObjectMeta(name=name, labels=labels or {}, annotations=annotations or {})
    core_v1.create_namespace(client.V1Namespace(metadata=metadata))
    # Pods are refused until the namespace's default ServiceAccount exists.
    until(
        lambda: (
            core_v1.list_namespaced_service_account(
                name, field_selector="metadata.name=default"
            ).items
        ),
        timeout=30,
        message=f"default ServiceAccount in {name}",
    )
    return name
