"""`taskmaster-operator`: wires the watches (tasks, Jobs, pods), the scheduler, leader
election, metrics, health endpoints and the admission webhook (served by kopf) together."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from kubernetes.aio import client
from prometheus_client import exposition

from taskmaster.core.names import GROUP, LABEL_TASK, PLURAL, VERSION
from taskmaster.shell.health import Health
from taskmaster.shell.kube import Kube, LimitedApiClient, collection_paths, load_configuration
from taskmaster.shell.leader import LeaderElector, LeaseConfig
from taskmaster.shell.metrics import Metrics
from taskmaster.shell.ratelimit import TokenBucket
from taskmaster.shell.scheduler import Scheduler
from taskmaster.shell.watch import Watch

if TYPE_CHECKING:
    from taskmaster.shell.webhook import Webhook

logger = logging.getLogger("taskmaster")

# The event loop beats twice a second and the scheduler loop turns at least
# every few seconds; this long without either means the process is wedged and
# the liveness probe fails. Far above the time box of one task's work.
_LOOP_STALL_SECONDS = 10.0
# On a graceful stop, how long the leader may go on writing the statuses it
# decided before it hands over (the pod's grace period is 30 s).
_FLUSH_SECONDS = 5.0
# The client's rate limit (docs/operations.md says how these were measured).
DEFAULT_KUBE_API_QPS = 500.0
DEFAULT_KUBE_API_BURST = 2500
DEFAULT_MAX_ACTIVE_RUNS = 1000
# Bounds a flag cannot pass: far beyond what one API server takes.
_MAX_KUBE_API_QPS = 100_000
_MAX_KUBE_API_BURST = 100_000
_MAX_MAX_ACTIVE_RUNS = 1_000_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="taskmaster-operator", description="Run ScheduledTasks as Kubernetes Jobs."
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable; none means cluster-wide)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect one active replica through a Lease (default: on)",
    )
    parser.add_argument("--lease-name", default="taskmaster-operator")
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE") or "default")
    parser.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS")
    parser.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics")
    parser.add_argument("--health-port", type=int, default=8081, help="/healthz and /readyz")
    parser.add_argument("--bind-address", default="0.0.0.0", help="address the ports listen on")  # noqa: S104
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--worker-image", help="image that runs task.http")
    limits = parser.add_argument_group("client limits")
    limits.add_argument(
        "--kube-api-qps",
        type=float,
        default=DEFAULT_KUBE_API_QPS,
        metavar="QPS",
        help="requests per second to the API server, sustained (0: no limit; default "
        f"{DEFAULT_KUBE_API_QPS:g})",
    )
    limits.add_argument(
        "--kube-api-burst",
        type=int,
        default=DEFAULT_KUBE_API_BURST,
        metavar="N",
        help=f"requests to the API server at once, above --kube-api-qps (default "
        f"{DEFAULT_KUBE_API_BURST})",
    )
    limits.add_argument(
        "--max-active-runs",
        type=int,
        default=DEFAULT_MAX_ACTIVE_RUNS,
        metavar="N",
        help="runs in flight (active Jobs) across all tasks; more wait, oldest first, and "
        "are recorded Missed past their startingDeadlineSeconds (0: no cap; default "
        f"{DEFAULT_MAX_ACTIVE_RUNS})",
    )
    webhook = parser.add_argument_group("validating admission webhook")
    webhook.add_argument(
        "--webhook-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the webhook over HTTPS on --bind-address:PORT (default 0: no webhook)",
    )
    webhook.add_argument(
        "--webhook-cert-dir",
        metavar="DIR",
        help="use DIR/tls.crt, DIR/tls.key (and DIR/ca.crt) instead of a self-signed certificate",
    )
    webhook.add_argument(
        "--webhook-secret",
        default="taskmaster-operator-webhook-tls",
        metavar="NAME",
        help="Secret in --lease-namespace holding the self-signed CA and certificate",
    )
    webhook.add_argument(
        "--webhook-dns-name",
        action="append",
        default=[],
        metavar="NAME",
        help="name (or IP address) in the self-signed certificate (repeatable)",
    )
    webhook.add_argument(
        "--webhook-configuration",
        metavar="NAME",
        help="ValidatingWebhookConfiguration whose caBundle the operator keeps current",
    )
    options = parser.parse_args(argv)
    if not 0 < options.retry_period < options.renew_deadline < options.lease_duration:
        parser.error("need 0 < --retry-period < --renew-deadline < --lease-duration")
    if not 0 <= options.kube_api_qps <= _MAX_KUBE_API_QPS:
        parser.error(f"--kube-api-qps must be from 0 (no limit) to {_MAX_KUBE_API_QPS}")
    if not 1 <= options.kube_api_burst <= _MAX_KUBE_API_BURST:
        parser.error(f"--kube-api-burst must be from 1 to {_MAX_KUBE_API_BURST}")
    if not 0 <= options.max_active_runs <= _MAX_MAX_ACTIVE_RUNS:
        parser.error(f"--max-active-runs must be from 0 (no cap) to {_MAX_MAX_ACTIVE_RUNS}")
    if not 0 <= options.webhook_port <= 65535:
        parser.error("--webhook-port must be 0 (off) or a TCP port")
    if options.webhook_port and not (options.webhook_cert_dir or options.webhook_dns_name):
        parser.error("--webhook-port needs --webhook-cert-dir or at least one --webhook-dns-name")
    return options


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # kopf's INFO messages are its own bookkeeping; ours say what matters.
    logging.getLogger("kopf").setLevel(logging.WARNING)


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{secrets.token_hex(4)}"


async def serve_http(host: str, port: int, routes: dict[str, Any]) -> web.AppRunner:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class Operator:
    """One operator process: watches, scheduler, election, HTTP endpoints."""

    def __init__(self, options: argparse.Namespace, configuration: client.Configuration) -> None:
        """Three clients: the watches hold long-lived connections apart from the pool of
        every other request, and the Lease's renewals have a pool and a rate limit of
        their own, so that neither watches nor a burst of runs can hold them up (as
        kube-controller-manager's leader election has a client of its own)."""
        self.options = options
        self.identity = identity()
        self.namespaces: list[str] = options.namespace
        self.metrics = Metrics()

        def limited(name: str) -> LimitedApiClient:
            waits = self.metrics.kube_api_wait.labels(name)
            bucket = TokenBucket(options.kube_api_qps, options.kube_api_burst)
            return LimitedApiClient(configuration, bucket, waits.observe)

        # The watches' requests (lists, and each watch's start) share the operator's bucket.
        api = limited("operator")
        watching = LimitedApiClient(configuration, api.limiter, api.waited)
        self.kube = Kube(api, self.identity)
        self.scheduler = Scheduler(
            self.kube,
            self.metrics,
            worker_image=options.worker_image,
            max_active_runs=options.max_active_runs or None,
            limiter=api.limiter,
        )
        self.watching = Kube(watching, self.identity)
        kinds = (
            (f"{GROUP}/{VERSION}", PLURAL, "", self.scheduler.cache.task_event),
            ("batch/v1", "jobs", LABEL_TASK, self.scheduler.cache.job_event),
            ("v1", "pods", LABEL_TASK, self.scheduler.cache.pod_event),
        )
        self.watches = [
            Watch(self.watching, path, selector, handle)
            for group_version, plural, selector, handle in kinds
            for path in collection_paths(self.namespaces, group_version, plural)
        ]
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.webhook: Webhook | None = None
        if options.webhook_port:
            # Imported only to serve it: kopf and cryptography weigh 14 MB in every
            # process that loads them, and most replicas of a large installation
            # could do without (the webhook is optional).
            from taskmaster.shell.webhook import Webhook  # noqa: PLC0415

            self.webhook = Webhook(options, self.kube)
        self.elector: LeaderElector | None = None
        if options.leader_elect:
            self.election_api = limited("leader-election")
            self.elector = LeaderElector(
                self.election_api,
                LeaseConfig(
                    name=options.lease_name,
                    namespace=options.lease_namespace,
                    identity=self.identity,
                    lease_duration=options.lease_duration,
                    renew_deadline=options.renew_deadline,
                    retry_period=options.retry_period,
                ),
            )
            elector = self.elector
            self.scheduler.fence.may_act = lambda: elector.leading

    async def metrics_page(self, request: web.Request) -> web.Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    def start_acting(self) -> None:
        self.metrics.leader.set(1)
        self.scheduler.start_acting()

    def stop_acting(self) -> None:
        self.scheduler.stop_acting()
        self.metrics.leader.set(0)
        self.metrics.forget_tasks()

    def handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)

    async def act(self) -> None:
        """Act once every watch has listed what exists, as leader if elected."""
        for watch in self.watches:
            await watch.listed.wait()
        self.ready.set()
        logger.info("caches warm: %d tasks", len(self.scheduler.cache.tasks))
        if self.elector is None:
            self.start_acting()
            await self.stop.wait()
        else:
            await self.elector.run(self.start_acting, self.stop_acting)

    async def serve_webhook(self, webhook: Webhook) -> None:
        """Run kopf, which serves the webhook (every replica does, leader or not).

        kopf's managed mode stays off: the chart owns the configuration, we its caBundle.
        """
        import kopf  # noqa: PLC0415 (see __init__)

        from taskmaster.shell.webhook import kopf_settings, register  # noqa: PLC0415

        registry = kopf.OperatorRegistry()
        register(registry, self.kube, self.metrics, self.options.worker_image)
        operator_settings = kopf_settings()
        operator_settings.admission.server = await webhook.start()
        started = asyncio.Event()
        served = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=operator_settings,
                clusterwide=not self.namespaces,
                namespaces=self.namespaces,
                standalone=True,
                stop_flag=self.stop,
                ready_flag=started,
            )
        )
        # kopf installs its own signal handlers as it starts; ours must get the
        # signal, so that the Lease is released before kopf winds down.
        await started.wait()
        self.handle_signals()
        await served

    async def run(self) -> None:
        options = self.options
        self.handle_signals()
        health = Health(
            options.bind_address,
            options.health_port,
            limit=_LOOP_STALL_SECONDS,
            ready=self.ready.is_set,
            stalled=self.scheduler.stalled,
        )
        health.start()
        runners = [
            await serve_http(
                options.bind_address, options.metrics_port, {"/metrics": self.metrics_page}
            ),
        ]
        scope = ", ".join(self.namespaces) or "cluster-wide"
        logger.info("taskmaster-operator %s starting (%s)", self.identity, scope)
        background = [
            *(asyncio.create_task(watch.run(), name=watch.path) for watch in self.watches),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(self.act(), name="act"),
            asyncio.create_task(health.beat_forever(), name="beat"),
        ]
        if self.webhook is not None:
            background += [
                asyncio.create_task(self.serve_webhook(self.webhook), name="kopf"),
                asyncio.create_task(self.webhook.maintain(), name="webhook"),
            ]
        stopper = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait(
                [stopper, *background], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopper}:
                task.result()  # a component that ended on its own ends the process
        finally:
            await self.shutdown([stopper, *background], runners)
            health.close()

    async def shutdown(self, tasks: list[asyncio.Task[Any]], runners: list[web.AppRunner]) -> None:
        # Write what was decided, stop acting, then hand the Lease over so a
        # standby takes over at once.
        self.stop.set()
        if self.scheduler.acting.is_set():
            await self.scheduler.flush(_FLUSH_SECONDS)
        self.stop_acting()
        if self.elector is not None:
            await self.elector.release()
        # kopf (when it serves the webhook) winds down on the stop flag, closing
        # its sessions; the rest is cancelled.
        if kopf := [task for task in tasks if task.get_name() == "kopf"]:
            await asyncio.wait(kopf, timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
        if self.webhook is not None:
            self.webhook.close()
        await self.kube.close()
        await self.watching.close()
        if self.elector is not None:
            await self.election_api.close()  # type: ignore[no-untyped-call]
        logger.info("taskmaster-operator %s stopped", self.identity)


async def run(options: argparse.Namespace) -> None:
    if options.kubeconfig:
        # kopf logs in through $KUBECONFIG.
        os.environ["KUBECONFIG"] = options.kubeconfig
    configuration = await load_configuration(options.kubeconfig)
    await Operator(options, configuration).run()


# The caches hold every task, Job and pod: a full collection walks them all,
# about two seconds with 10,000 tasks, the event loop stalled meanwhile. With
# the default thresholds one ran every ten seconds or so under load, a sixth
# of the operator's CPU. Young collections stay as they are (larger ones cost
# more in all); full ones may come after 1,000 middle ones instead of 10,
# minutes apart. Nearly all the garbage here is acyclic JSON, freed at once by
# reference counting regardless.
_GC_THRESHOLDS = (700, 10, 1000)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    configure_logging(options.log_format)
    gc.set_threshold(*_GC_THRESHOLDS)
    asyncio.run(run(options))
