"""The webhook never stops the operator: an unreachable Secret means a provisional certificate."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, cast

from cryptography import x509

from taskmaster.shell.certificates import CERT_KEY
from taskmaster.shell.webhook import Webhook


class _Unreachable:
    """An API server that answers nothing the way a client library expects."""

    async def read_secret(self, namespace: str, name: str) -> Any:
        raise ConnectionResetError("connection reset by peer")


def test_an_unreachable_secret_still_starts_the_server_with_a_provisional_certificate() -> None:
    options = argparse.Namespace(
        webhook_configuration="taskmaster",
        webhook_cert_dir=None,
        lease_namespace="ops",
        webhook_secret="taskmaster-webhook-tls",
        webhook_dns_name=["taskmaster-webhook.ops.svc"],
        bind_address="127.0.0.1",
        webhook_port=9443,
    )
    webhook = Webhook(options, cast(Any, _Unreachable()))
    try:
        server = asyncio.run(webhook.start())

        assert webhook.directory is not None
        cert = x509.load_pem_x509_certificate((webhook.directory / CERT_KEY).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["taskmaster-webhook.ops.svc"]
        assert server.certfile == webhook.directory / CERT_KEY
    finally:
        webhook.close()
