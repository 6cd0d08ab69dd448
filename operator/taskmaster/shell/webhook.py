"""The validating admission webhook: refuses at apply time what the operator would mark Invalid.

Every replica serves it (it keeps no state), through kopf's WebhookServer
over HTTPS. The certificate is either mounted (`--webhook-cert-dir`, such as
a cert-manager Secret; kopf reloads changed files) or self-signed and kept in
a Secret that all replicas share, so one `caBundle` fits whichever replica the
API server reaches. The operator keeps that `caBundle` in the
ValidatingWebhookConfiguration up to date; it never creates or changes
anything else there (kopf's managed mode would rewrite the whole object).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from taskmaster.core.admission import (
    backfill_problems,
    denial,
    job_problems,
    needs_review,
    new_backfill,
    probe_job,
)
from taskmaster.core.names import GROUP, PLURAL, VERSION
from taskmaster.core.spec import InvalidSpec, parse_task
from taskmaster.shell.certificates import (
    CA_KEY,
    CERT_KEY,
    KEY_KEY,
    Certificates,
    good_for,
    renew,
)
from taskmaster.shell.kube import ApiError, Kube
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.timebox import TIME_BOX_SECONDS, Overrun, time_box

logger = logging.getLogger(__name__)

# The handler id is the URL path kopf serves it at: /validate-scheduledtask.
HANDLER_ID = "validate-scheduledtask"
# The whole review must fit in the configuration's timeoutSeconds (the chart's
# webhook.timeoutSeconds is at least 4 for this reason).
DRY_RUN_TIMEOUT = 3.0
# How often the certificate and caBundle are re-checked: renewals are 30 days
# ahead, but a caBundle dropped by a replace (`helm upgrade --force`, a sync that
# does not ignore it) should heal within a minute.
RECHECK_SECONDS = 60.0
RETRY_SECONDS = 5.0
# How long the start waits for the shared certificate before serving a provisional one.
START_TIMEOUT = 10.0
# How often kopf looks for new certificate files (mounted or written by us).
FILE_CHECK_SECONDS = 10.0
# Writers that lose a race re-read; this many losses in a row is not a race.
_SECRET_ATTEMPTS = 5


def kopf_settings() -> kopf.OperatorSettings:
    """kopf serves the admission webhook and nothing else: it watches nothing."""
    settings = kopf.OperatorSettings()
    # Leader election is ours (a Lease); kopf's peering and its own Events are off.
    settings.peering.standalone = True
    settings.posting.enabled = False
    # No CRDs or namespaces to discover (nor RBAC to allow it, cluster-wide).
    settings.scanning.disabled = True
    return settings


def register(
    registry: kopf.OperatorRegistry, kube: Kube, metrics: Metrics, worker_image: str | None
) -> None:
    """kopf's login (the operator's credentials) and the validating handler."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    verdicts = metrics.admission_reviews

    @kopf.on.validate(GROUP, VERSION, PLURAL, id=HANDLER_ID, registry=registry)
    async def validate(**kwargs: Any) -> None:
        body: Mapping[str, Any] = kwargs["body"]
        review = needs_review(kwargs.get("operation"), kwargs.get("old"), body)
        backfill = new_backfill(kwargs.get("old"), body)
        if not review and backfill is None:
            return
        now = datetime.now(UTC)
        try:
            # The same time box as the operator's: a spec too costly to read is refused.
            with time_box(TIME_BOX_SECONDS):
                spec = parse_task(body, now=now)
                problems = backfill_problems(backfill, spec, now) if backfill else []
                if problems:
                    raise InvalidSpec(problems)
                job = probe_job(body, spec, now=now, worker_image=worker_image) if review else None
            status = None if job is None else await kube.dry_run_job(job, seconds=DRY_RUN_TIMEOUT)
        except Overrun:
            verdicts.labels("denied").inc()
            why = f"spec: reading it took longer than {TIME_BOX_SECONDS:g}s"
            raise kopf.AdmissionError(why, code=422) from None
        except InvalidSpec as invalid:
            verdicts.labels("denied").inc()
            raise kopf.AdmissionError(denial(invalid.errors), code=422) from None
        except Exception as error:
            verdicts.labels("unchecked").inc()
            # Neither a slow API server nor a fault of ours is the user's: admit,
            # and let the operator report what it cannot run (Invalid, or a
            # failed run for a Job the API refuses). kopf would deny instead.
            metadata = body.get("metadata") or {}
            logger.warning(
                "admitting %s/%s unchecked: %s",
                metadata.get("namespace"),
                metadata.get("name"),
                str(error) or type(error).__name__,
                exc_info=not isinstance(error, (ApiError, TimeoutError)),
            )
            return
        if status is not None:
            verdicts.labels("denied").inc()
            raise kopf.AdmissionError(denial(job_problems(status, spec)), code=422)
        verdicts.labels("allowed").inc()


class SelfSigned:
    """Certificates in a Secret, created by whichever replica comes first."""

    def __init__(self, kube: Kube, namespace: str, name: str, names: Sequence[str]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.names = list(names)

    async def load(self) -> Certificates:
        for _ in range(_SECRET_ATTEMPTS):
            secret = await self.kube.read_secret(self.namespace, self.name)
            current = Certificates.from_secret_data(secret.get("data")) if secret else None
            now = datetime.now(UTC)
            if current is not None and good_for(current, self.names, now):
                return current
            fresh = renew(current, self.names, now)
            if secret is None:
                written = await self.kube.create_secret(self.namespace, self._secret(fresh, {}))
            else:
                written = await self.kube.replace_secret(
                    self.namespace, self._secret(fresh, secret["metadata"])
                )
            if written:
                logger.info(
                    "webhook certificate for %s issued into Secret %s/%s",
                    ", ".join(self.names),
                    self.namespace,
                    self.name,
                )
                return fresh
            # Another replica wrote it first: theirs is as good as ours.
        raise RuntimeError(f"Secret {self.namespace}/{self.name} keeps changing under us")

    def _secret(self, certs: Certificates, metadata: Mapping[str, Any]) -> dict[str, Any]:
        kept = {
            key: metadata[key]
            for key in ("resourceVersion", "labels", "annotations")
            if key in metadata
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**kept, "name": self.name, "namespace": self.namespace},
            "type": "kubernetes.io/tls",
            "data": certs.secret_data(),
        }


class Mounted:
    """Certificates someone else keeps in a directory (a mounted cert-manager Secret)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def ca_file(self) -> Path | None:
        path = self.directory / CA_KEY
        return path if path.exists() else None

    async def load(self) -> Certificates:
        cert = (self.directory / CERT_KEY).read_bytes()
        ca_file = self.ca_file
        # Without a CA the certificate must be trusted as it is (self-signed).
        ca = ca_file.read_bytes() if ca_file is not None else cert
        return Certificates(cert=cert, key=(self.directory / KEY_KEY).read_bytes(), ca=ca)


def _write(path: Path, content: bytes) -> None:
    """Replace a file at once: kopf must never read a half-written certificate."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    partial.replace(path)


class Webhook:
    """Certificates, the server kopf runs, and the caBundle of the webhook configuration."""

    def __init__(self, options: argparse.Namespace, kube: Kube) -> None:
        self.options = options
        self.kube = kube
        self.configuration: str | None = options.webhook_configuration
        self.source: SelfSigned | Mounted
        self.directory: Path | None = None
        if options.webhook_cert_dir:
            self.source = Mounted(Path(options.webhook_cert_dir))
        else:
            self.source = SelfSigned(
                kube, options.lease_namespace, options.webhook_secret, options.webhook_dns_name
            )
        self.certificates: Certificates | None = None
        self._missing_logged = False

    async def start(self) -> kopf.WebhookServer:
        """Certificates in place, and the server kopf is to run with them."""
        if isinstance(self.source, Mounted):
            certs = await self.source.load()
            directory, ca_file = self.source.directory, self.source.ca_file
        else:
            try:
                certs = await asyncio.wait_for(self.source.load(), timeout=START_TIMEOUT)
            except Exception as error:
                # Scheduling must not wait for the Secret: serve a certificate of
                # our own (the API server does not trust it, so failurePolicy
                # applies) until maintain() installs the shared one.
                logger.warning(
                    "webhook Secret unavailable, serving a provisional certificate: %s", error
                )
                certs = renew(None, self.source.names, datetime.now(UTC))
            # The root filesystem is read-only in the chart; the temporary one is not.
            directory = self.directory = Path(tempfile.mkdtemp(prefix="taskmaster-webhook-"))
            ca_file = directory / CA_KEY
            self._install(certs)
        self.certificates = certs
        return kopf.WebhookServer(
            addr=self.options.bind_address,
            port=self.options.webhook_port,
            certfile=directory / CERT_KEY,
            pkeyfile=directory / KEY_KEY,
            cafile=ca_file,
            file_check_interval=FILE_CHECK_SECONDS,
        )

    def _install(self, certs: Certificates) -> None:
        directory = self.directory
        if directory is None:
            return  # mounted: the files are someone else's
        # The CA first, so a reload between writes never serves a certificate its bundle lacks.
        _write(directory / CA_KEY, certs.ca)
        _write(directory / KEY_KEY, certs.key)
        _write(directory / CERT_KEY, certs.cert)

    async def maintain(self) -> None:
        """Forever: follow the certificate (renewals, other replicas' writes) and publish its CA."""
        while True:
            try:
                certs = await self.source.load()
                if certs != self.certificates:
                    logger.info("webhook certificate changed; serving the new one")
                    self._install(certs)
                self.certificates = certs
                ready = (
                    await self.publish(self.configuration, certs.ca) if self.configuration else True
                )
            except Exception as error:
                # Whatever went wrong (the API server restarting, a Secret of the
                # wrong type), scheduling must go on: retry, never end the process.
                logger.warning("webhook certificate upkeep failed, retrying: %s", error)
                ready = False
            await asyncio.sleep(RECHECK_SECONDS if ready else RETRY_SECONDS)

    async def publish(self, name: str, ca: bytes) -> bool:
        """Set caBundle of every webhook in configuration `name` to `ca`; False if it is absent."""
        configuration = await self.kube.read_webhook_configuration(name)
        if configuration is None:
            if not self._missing_logged:
                logger.info("ValidatingWebhookConfiguration %s not found yet", name)
                self._missing_logged = True
            return False
        self._missing_logged = False
        bundle = base64.b64encode(ca).decode()
        operations: list[dict[str, Any]] = []
        for index, webhook in enumerate(configuration.get("webhooks") or []):
            if (webhook.get("clientConfig") or {}).get("caBundle") != bundle:
                # The test keeps an index that moved meanwhile from patching the wrong webhook.
                path = f"/webhooks/{index}"
                operations += [
                    {"op": "test", "path": f"{path}/name", "value": webhook["name"]},
                    {"op": "add", "path": f"{path}/clientConfig/caBundle", "value": bundle},
                ]
        if operations:
            await self.kube.patch_webhook_configuration(name, operations)
            logger.info("caBundle of %d webhook(s) in %s updated", len(operations) // 2, name)
        return True

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
