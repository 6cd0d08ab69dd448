"""A ValidatingWebhookConfiguration served by a test's operator on 127.0.0.1."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.wait import until


@dataclass
class ServedWebhook:
    """The configuration the API server calls, and the Secret whose certificate answers."""

    api: client.ApiClient
    configuration: str
    secret: str
    secret_namespace: str
    port: int

    def operator_args(self, port: int | None = None) -> list[str]:
        """The chart's webhook flags, with the name the API server calls here."""
        return [
            *("--webhook-port", str(port or self.port)),
            *("--webhook-dns-name", "127.0.0.1"),
            *("--webhook-secret", self.secret),
            *("--webhook-configuration", self.configuration),
        ]

    def ca_bundle(self) -> str | None:
        admission = client.AdmissionregistrationV1Api(self.api)
        configuration = admission.read_validating_webhook_configuration(self.configuration)
        bundle: str | None = configuration.webhooks[0].client_config.ca_bundle
        return bundle

    def secret_data(self) -> dict[str, str] | None:
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(
                self.secret, self.secret_namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data: dict[str, str] = secret.data
        return data

    def secret_certificate(self) -> bytes | None:
        data = self.secret_data()
        if data is None:
            return None
        return ssl.PEM_cert_to_DER_cert(base64.b64decode(data["tls.crt"]).decode())

    def served_certificate(self, port: int | None = None) -> bytes | None:
        try:
            pem = ssl.get_server_certificate(("127.0.0.1", port or self.port), timeout=2)
        except OSError:
            return None
        return ssl.PEM_cert_to_DER_cert(pem)

    def wait_serving(self, port: int | None = None) -> None:
        """Until caBundle is the Secret's CA and the server presents the Secret's certificate."""

        def published() -> bool:
            data = self.secret_data()
            return data is not None and self.ca_bundle() == data["ca.crt"]

        until(published, timeout=30, message=f"caBundle of {self.configuration} filled")
        until(
            lambda: self.served_certificate(port) == self.secret_certificate(),
            timeout=30,
            message=f"webhook serving on port {port or self.port}",
        )
