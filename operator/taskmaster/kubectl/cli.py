"""`kubectl taskmaster …`: the commands, their flags, and their calls to the API server."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from taskmaster.core.backfill import BadRequest, parse_request
from taskmaster.core.backfill import check as check_backfill
from taskmaster.core.names import (
    ANNOTATION_BACKFILL,
    ANNOTATION_RESUME,
    ANNOTATION_RUN_NOW,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Run,
    Trigger,
    job_name,
)
from taskmaster.core.preview import MAX_PREVIEW, describe_schedule, upcoming
from taskmaster.core.spec import (
    DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    InvalidSpec,
    TaskSpec,
    parse_spec,
)
from taskmaster.core.times import parse_time, rfc3339
from taskmaster.kubectl import view
from taskmaster.kubectl.view import RESOURCE, PluginError

PROG = "kubectl taskmaster"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_MERGE_PATCH = "application/merge-patch+json"


def _common(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    """The connection flags; accepted before and after the command, as kubectl accepts them."""
    # In a command's own parser an absent flag must not override one given before it.
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    group = parser.add_argument_group("connection")
    group.add_argument(
        "-n", "--namespace", help="the namespace (default: the context's, else default)", **default
    )
    group.add_argument("--kubeconfig", help="path of the kubeconfig file to use", **default)
    group.add_argument("--context", help="the kubeconfig context to use", **default)
    group.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="give up on an API request after this long (default 30)",
        **default,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and operate TaskMaster ScheduledTasks.",
        epilog="Installed as the kubectl-taskmaster command: kubectl finds it on PATH.",
    )
    _common(parser, nested=False)
    parser.set_defaults(namespace=None, kubeconfig=None, context=None, request_timeout=30.0)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        _common(sub, nested=True)
        return sub

    listing = command("list", "list tasks: schedule, phase, last and next run, last result")
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list the tasks of every namespace"
    )
    listing.add_argument("-o", "--output", choices=("table", "json", "name"), default="table")

    describe = command("describe", "show a task: spec, status, conditions, history and Events")
    describe.add_argument("name")

    history = command("history", "show a task's run history, newest first")
    history.add_argument("name")
    history.add_argument("-o", "--output", choices=("table", "json"), default="table")

    run = command("run", "start one manual run now (sets the run-now annotation)")
    run.add_argument("name")
    run.add_argument(
        "--wait", action="store_true", help="wait until the operator creates the run's Job"
    )
    run.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="how long --wait waits"
    )

    for name, help_ in (
        ("suspend", "stop new runs (running ones continue)"),
        ("resume", "let the schedule run again (after suspend, or a stop after failures)"),
    ):
        sub = command(name, help_)
        sub.add_argument("names", nargs="+", metavar="NAME")

    backfill = command(
        "backfill",
        "run every scheduled time of a past range once, oldest first (sets the backfill"
        " annotation)",
    )
    backfill.add_argument("name")
    backfill.add_argument("--from", dest="start", required=True, metavar="TIME", help="RFC 3339")
    backfill.add_argument(
        "--to", dest="end", required=True, metavar="TIME", help="RFC 3339, not in the future"
    )

    upcoming = command(
        "next",
        "preview the next run times of a task, or of a schedule without a task",
    )
    upcoming.add_argument(
        "name", nargs="?", help="the task (omit it to preview --schedule/--every)"
    )
    upcoming.add_argument(
        "-c", "--count", type=_positive, default=10, metavar="N",
        help=f"how many runs (default 10, at most {MAX_PREVIEW})",
    )  # fmt: skip
    upcoming.add_argument("--schedule", metavar="EXPR", help="a cron expression to preview")
    upcoming.add_argument("--every", metavar="DURATION", help="an interval to preview (30s, 1h)")
    upcoming.add_argument(
        "--time-zone", metavar="ZONE", help="the IANA zone of --schedule (default UTC)"
    )
    upcoming.add_argument("-o", "--output", choices=("table", "json"), default="table")

    logs = command("logs", "print the pod logs of a run (default: the most recent one)")
    logs.add_argument("name")
    logs.add_argument(
        "--run",
        type=_positive,
        default=1,
        metavar="N",
        help="the Nth most recent run with a Job (1, the default, is the latest)",
    )
    logs.add_argument("-c", "--container", help="the container (default: the pod's default)")
    logs.add_argument("-f", "--follow", action="store_true", help="stream the logs as they grow")
    logs.add_argument("--tail", type=int, metavar="LINES", help="only the last LINES lines")
    return parser


@dataclass
class Session:
    """An API client and the namespace the command works in."""

    api: client.ApiClient
    namespace: str
    timeout: float

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    def plain(self, obj: Any) -> Any:
        """A client model as the API's JSON (camelCase keys), as the pure views expect."""
        return self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def connect(options: argparse.Namespace) -> Session:
    """The kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`) or in-cluster config."""
    kubeconfig = options.kubeconfig or os.environ.get("KUBECONFIG")
    default_file = Path("~/.kube/config").expanduser()
    in_cluster = (
        not kubeconfig and not default_file.exists() and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    try:
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
            namespace = _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        else:
            contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=options.kubeconfig
            )
            wanted = options.context or (current or {}).get("name")
            context = next((c for c in contexts if c.get("name") == wanted), None)
            if context is None:
                if options.context:
                    raise PluginError(f'context "{options.context}" does not exist')
                raise PluginError("the kubeconfig has no current context: pass --context")
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=options.kubeconfig, context=options.context
            )
            namespace = (context.get("context") or {}).get("namespace") or "default"
    except (ConfigException, OSError) as error:
        raise PluginError(f"cannot load the cluster configuration: {error}") from error
    return Session(api, options.namespace or namespace, options.request_timeout)


def _api_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{error.status} {error.reason}".strip()


def _not_a_resource(error: ApiException) -> bool:
    """A 404 for the resource type itself (CRD not installed), not for one object."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return True
    return not (isinstance(body, dict) and (body.get("details") or {}).get("name"))


def _not_installed() -> PluginError:
    return PluginError(
        f"the server doesn't have the resource type {RESOURCE}: is TaskMaster's CRD installed?"
    )


def get_task(session: Session, name: str) -> dict[str, Any]:
    try:
        task: dict[str, Any] = session.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP,
            VERSION,
            session.namespace,
            PLURAL,
            name,
            _request_timeout=session.timeout,
        )
    except ApiException as error:
        if error.status == 404:
            if _not_a_resource(error):
                raise _not_installed() from error
            raise PluginError(
                f'scheduledtask "{name}" not found in namespace "{session.namespace}"'
            ) from error
        raise
    return task


def patch_task(session: Session, name: str, body: dict[str, Any]) -> dict[str, Any]:
    get_task(session, name)  # a clear NotFound first
    patched: dict[str, Any] = session.custom.patch_namespaced_custom_object(  # type: ignore[assignment]
        GROUP,
        VERSION,
        session.namespace,
        PLURAL,
        name,
        body,
        _content_type=_MERGE_PATCH,
        _request_timeout=session.timeout,
    )
    return patched


def _now() -> datetime:
    return datetime.now(UTC)


def cmd_list(session: Session, options: argparse.Namespace) -> None:
    try:
        if options.all_namespaces:
            listing = session.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=session.timeout
            )
        else:
            listing = session.custom.list_namespaced_custom_object(
                GROUP, VERSION, session.namespace, PLURAL, _request_timeout=session.timeout
            )
    except ApiException as error:
        if error.status == 404:
            raise _not_installed() from error
        raise
    tasks: list[dict[str, Any]] = cast(dict[str, Any], listing).get("items") or []
    if options.output == "json":
        print(json.dumps(tasks, indent=2))
    elif options.output == "name":
        for task in tasks:
            print(f"{RESOURCE}/{task['metadata']['name']}")
    elif not tasks:
        where = "" if options.all_namespaces else f' in namespace "{session.namespace}"'
        print(f"No ScheduledTasks found{where}.", file=sys.stderr)
    else:
        print(view.list_table(tasks, _now(), all_namespaces=options.all_namespaces))


def task_events(session: Session, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's Events (events.k8s.io/v1, regarding the task); none when they cannot be read."""
    meta = task["metadata"]
    try:
        events = client.EventsV1Api(session.api).list_namespaced_event(
            session.namespace,
            field_selector=f"regarding.kind={KIND},regarding.name={meta['name']}",
            _request_timeout=session.timeout,
        )
    except ApiException:
        # Events are a courtesy: a user who may read tasks but not Events still gets the rest.
        return []
    found = [session.plain(event) for event in events.items]
    return [e for e in found if (e.get("regarding") or {}).get("uid") in (None, meta.get("uid"))]


def cmd_describe(session: Session, options: argparse.Namespace) -> None:
    task = get_task(session, options.name)
    print(view.describe(task, task_events(session, task), _now()))


def cmd_history(session: Session, options: argparse.Namespace) -> None:
    task = get_task(session, options.name)
    status = task.get("status") or {}
    if options.output == "json":
        print(json.dumps(view.history_json(status), indent=2))
    elif not status.get("history"):
        print(
            f'No runs yet for scheduledtask "{options.name}" in namespace "{session.namespace}".',
            file=sys.stderr,
        )
    else:
        print(view.history_table(status))


def cmd_run(session: Session, options: argparse.Namespace) -> None:
    requested = _now()
    token = view.run_now_token(requested)
    patch_task(session, options.name, {"metadata": {"annotations": {ANNOTATION_RUN_NOW: token}}})
    print(f"{RESOURCE}/{options.name} run requested (token {token})")
    if options.wait:
        job = job_name(options.name, Run(requested, 1, Trigger.MANUAL, token))
        wait_for_job(session, job, options.timeout)
        print(f"job.batch/{job} created")


def wait_for_job(session: Session, name: str, timeout: float) -> None:
    """Watch for the Job `name` to exist; PluginError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    listing = session.batch.list_namespaced_job(
        session.namespace, field_selector=selector, _request_timeout=session.timeout
    )
    if listing.items:
        return
    version = listing.metadata.resource_version if listing.metadata else None
    while (remaining := deadline - time.monotonic()) > 0:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            session.batch.list_namespaced_job,
            session.namespace,
            field_selector=selector,
            resource_version=version,
            timeout_seconds=max(1, int(remaining)),
            _request_timeout=remaining + 5,
        ):
            if event["type"] in ("ADDED", "MODIFIED"):
                stream.stop()  # type: ignore[no-untyped-call]
                return
    raise PluginError(
        f'no Job "{name}" after {timeout:g}s: is the operator running and watching '
        f'namespace "{session.namespace}"?'
    )


def _set_suspend(suspend: bool) -> Callable[[Session, argparse.Namespace], None]:
    word = "suspended" if suspend else "resumed"

    def command(session: Session, options: argparse.Namespace) -> None:
        for name in options.names:
            task = get_task(session, name)
            stopped = view.stopped_after_failures(task)
            if not suspend and stopped:
                # Stopped after failures: a new resume token starts it again (and
                # suspend goes, if it was set too).
                patch: dict[str, Any] = {
                    "metadata": {"annotations": {ANNOTATION_RESUME: view.run_now_token(_now())}}
                }
                if (task.get("spec") or {}).get("suspend"):
                    patch["spec"] = {"suspend": False}
                patch_task(session, name, patch)
                print(f"{RESOURCE}/{name} {word}")
                continue
            if bool((task.get("spec") or {}).get("suspend")) == suspend:
                print(f"{RESOURCE}/{name} already {word}")
                continue
            patch_task(session, name, {"spec": {"suspend": suspend}})
            print(f"{RESOURCE}/{name} {word}")

    return command


def cmd_backfill(session: Session, options: argparse.Namespace) -> None:
    """Checked here as the operator will check it, so a refusal comes at once."""
    now = _now()
    task = get_task(session, options.name)
    spec = view.spec_of(task, now)
    if spec is None:
        raise PluginError("the task's spec is invalid: see kubectl taskmaster describe")
    token = view.run_now_token(now)
    value = json.dumps({"token": token, "from": options.start, "to": options.end})
    try:
        request = parse_request(value)  # as the webhook and the operator read it
    except BadRequest as error:
        raise PluginError(f"--{error.key}: {error.reason}") from error
    runs, refusal = check_backfill(spec.schedule, request, now)
    if refusal is not None:
        raise PluginError(f"backfill refused: {refusal}")
    annotation = {ANNOTATION_BACKFILL: request.annotation()}
    patch_task(session, options.name, {"metadata": {"annotations": annotation}})
    print(
        f"{RESOURCE}/{options.name} backfill requested (token {token}): {runs} runs from"
        f" {rfc3339(request.start)} to {rfc3339(request.end)}, oldest first"
    )


# The flags of a preview without a task, for the fields the parser names.
_PREVIEW_FLAGS = {
    "spec.schedule": "--schedule",
    "spec.every": "--every",
    "spec.timeZone": "--time-zone",
}


def _preview_key(options: argparse.Namespace) -> str:
    """The `namespace/name` a preview without a task hashes H fields and jitter with."""
    return f"{options.namespace or 'default'}/preview"


def _preview_spec(options: argparse.Namespace, now: datetime) -> TaskSpec:
    """The spec `next --schedule/--every` previews: the flags as a task's spec, read by the
    operator's own parser (H fields hash as for a task named `preview`)."""
    given = [flag for flag in ("schedule", "every") if getattr(options, flag) is not None]
    if len(given) != 1:
        raise PluginError("next: give a task NAME, or exactly one of --schedule and --every")
    raw: dict[str, Any] = {
        given[0]: getattr(options, given[0]),
        "task": {"http": {"url": "http://x"}},
    }
    if options.time_zone is not None:
        raw["timeZone"] = options.time_zone
    namespace, name = _preview_key(options).split("/")
    try:
        return parse_spec(raw, namespace=namespace, name=name, created=now)
    except InvalidSpec as invalid:
        messages = [
            f"{_PREVIEW_FLAGS.get(error.path, error.path)}: {error.message}"
            for error in invalid.errors
        ]
        raise PluginError("; ".join(messages)) from invalid


def _print_preview(
    options: argparse.Namespace, spec: TaskSpec, key: str, after: datetime, now: datetime
) -> None:
    runs = upcoming(spec, key, after, options.count)
    if options.output == "json":
        print(json.dumps(view.next_json(runs), indent=2))
        return
    print(f"Schedule: {describe_schedule(spec)}")
    if not runs:
        print("No runs to come.", file=sys.stderr)
        return
    print(view.next_table(runs, spec.time_zone, now))


def preview_schedule(options: argparse.Namespace) -> None:
    """`next --schedule/--every`: no task, no cluster."""
    now = _now()
    _print_preview(options, _preview_spec(options, now), _preview_key(options), now, now)


def _check_next(options: argparse.Namespace) -> None:
    """`next` with a NAME takes none of the flags of a preview without a task."""
    flags = (options.schedule, options.every, options.time_zone)
    if options.name is not None and any(flag is not None for flag in flags):
        raise PluginError("next: --schedule, --every and --time-zone preview without a task NAME")


def cmd_next(session: Session, options: argparse.Namespace) -> None:
    now = _now()
    task = get_task(session, options.name)
    spec = view.spec_of(task, now)
    status = task.get("status") or {}
    if spec is None:
        ready = [c for c in status.get("conditions") or () if c.get("type") == "Ready"]
        why = (ready[0].get("message") if ready else None) or "see describe"
        raise PluginError(f"the task's spec is invalid: {why}")
    for holds, why in (
        (spec.suspend, "suspended (spec.suspend): none of these runs while it is"),
        (
            view.stopped_after_failures(task),
            "stopped after failures: none of these runs until resumed",
        ),
    ):
        if holds:
            print(f"warning: the task is {why}", file=sys.stderr)
    # From the operator's cursor, as status.nextRunTime is; never from the past.
    cursor = parse_time(status.get("lastScheduleTime"))
    after = max(cursor, now) if cursor is not None else now
    meta = task["metadata"]
    _print_preview(options, spec, f"{meta['namespace']}/{meta['name']}", after, now)


def cmd_logs(session: Session, options: argparse.Namespace) -> None:
    task = get_task(session, options.name)
    run = view.select_run(task, options.run)
    described = f"run {options.run} ({rfc3339(run.scheduled)}, {run.result})"
    try:
        job = session.batch.read_namespaced_job(
            run.job_name, session.namespace, _request_timeout=session.timeout
        )
    except ApiException as error:
        if error.status != 404:
            raise
        spec = task.get("spec") or {}
        kept = spec.get("successfulJobsHistoryLimit", DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT)
        kept_failed = spec.get("failedJobsHistoryLimit", DEFAULT_FAILED_JOBS_HISTORY_LIMIT)
        raise PluginError(
            f'the Job "{run.job_name}" of {described} no longer exists: finished Jobs are '
            f"deleted beyond successfulJobsHistoryLimit ({kept}) and failedJobsHistoryLimit "
            f"({kept_failed}); status.history keeps the result"
        ) from error
    selector_of = job.spec.selector if job.spec else None
    labels = (selector_of.match_labels or {}) if selector_of else {}
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    pods = session.core.list_namespaced_pod(
        session.namespace,
        label_selector=selector or f"job-name={run.job_name}",
        _request_timeout=session.timeout,
    )
    pod = view.newest_pod([session.plain(p) for p in pods.items])
    if pod is None:
        raise PluginError(f'the Job "{run.job_name}" of {described} has no pods')
    pod_name = pod["metadata"]["name"]
    container = options.container or view.default_container(pod)
    try:
        for chunk in read_logs(session, pod_name, container, options):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except ApiException as error:
        raise PluginError(
            f'cannot read the logs of pod "{pod_name}" (Job "{run.job_name}", {described}): '
            f"{_api_message(error)}" + _logs_hint(error, pod)
        ) from error


def read_logs(
    session: Session, pod: str, container: str, options: argparse.Namespace
) -> Iterator[bytes]:
    response = session.core.read_namespaced_pod_log(
        pod,
        session.namespace,
        container=container,
        follow=options.follow or None,
        tail_lines=options.tail,
        _preload_content=False,
        _request_timeout=None if options.follow else session.timeout,
    )
    # urllib3's response, however the client wraps it.
    raw: Any = getattr(response, "response", response)
    try:
        yield from raw.stream(64 * 1024)
    finally:
        raw.release_conn()


def _logs_hint(error: ApiException, pod: Mapping[str, Any]) -> str:
    """Why a node may not serve logs: the API server proxies them from the pod's node."""
    if error.status not in (400, 500, 502, 503):
        return ""
    node = (pod.get("spec") or {}).get("nodeName") or "its node"
    return (
        f"\n(the API server reads pod logs from the kubelet of {node}; a node that serves "
        "no kubelet API, such as a simulated one, has no logs to give)"
    )


COMMANDS: dict[str, Callable[[Session, argparse.Namespace], None]] = {
    "list": cmd_list,
    "describe": cmd_describe,
    "history": cmd_history,
    "run": cmd_run,
    "suspend": _set_suspend(True),
    "resume": _set_suspend(False),
    "logs": cmd_logs,
    "next": cmd_next,
    "backfill": cmd_backfill,
}


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    options = build_parser().parse_args(argv)
    try:
        if options.command == "next":
            _check_next(options)
            if options.name is None:
                preview_schedule(options)  # a schedule without a task needs no cluster
                return
        COMMANDS[options.command](connect(options), options)
    except PluginError as error:
        _fail(str(error))
    except ApiException as error:
        _fail(f"{_api_message(error)} ({error.status} {error.reason})".replace("  ", " "))
    except (urllib3.exceptions.HTTPError, OSError) as error:
        if isinstance(error, BrokenPipeError):
            sys.exit(0)  # `kubectl taskmaster logs x | head`
        _fail(f"cannot reach the API server: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
