"""The operator's writes to the API server: Jobs, task status, Events, and the
webhook's dry-runs, certificate Secret and caBundle.

The client's generated methods take its model classes; plain dicts serialize
the same, hence the casts. Its config loaders are untyped.

Also the lists and watches of tasks, Jobs and pods (`shell/watch.py`).
Responses are read as plain JSON rather than the client's generated models:
the operator works on dicts throughout and model conversion would dominate at
scale. The writes of every run (Job, status, Events, deletions) go out
through `_send` for the same reason: the generated methods validate a dict
body into the client's models and serialize it back, which cost more than
the request.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes.aio import client, config

from taskmaster.core.names import API_VERSION, GROUP, KIND, PLURAL, VERSION, TaskRef
from taskmaster.core.times import micro_time
from taskmaster.shell.ratelimit import NORMAL, URGENT, TokenBucket

logger = logging.getLogger(__name__)

FIELD_MANAGER = "taskmaster-operator"
REPORTING_CONTROLLER = "taskmaster.dev/operator"


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{status}: {message}")
        self.status = status


async def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """The kubeconfig given (or $KUBECONFIG, ~/.kube/config), else the in-cluster config."""
    configuration = client.Configuration()
    # Without this every request reads ~/.netrc in a thread (aiohttp's trust_env):
    # it was the operator's largest single cost under load.
    configuration.client_session_kwargs = {"trust_env": False}
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            pass
        else:
            return configuration
    await config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return configuration


class LimitedApiClient(client.ApiClient):
    """An API client whose every request first waits for the rate limiter (client-go's
    `rest.Config.RateLimiter`): generated methods and `Kube._send` alike.

    `waited` is told how long each request waited (0 when it did not).
    """

    def __init__(
        self,
        configuration: client.Configuration,
        limiter: TokenBucket,
        waited: Callable[[float], None],
    ) -> None:
        super().__init__(configuration)
        self.limiter = limiter
        self.waited = waited

    async def call_api(self, *args: Any, priority: int = NORMAL, **kwargs: Any) -> Any:
        self.waited(await self.limiter.wait(priority))
        return await super().call_api(*args, **kwargs)


async def _json(response: Any, expected: tuple[int, ...] = (200, 201, 202)) -> Any:
    body = await response.read()
    if response.status not in expected:
        raise ApiError(response.status, body.decode(errors="replace"))
    return json.loads(body) if body else None


async def json_unless_missing(response: Any) -> dict[str, Any] | None:
    """The object read, None when it does not exist (404)."""
    if response.status == 404:
        await response.read()
        return None
    result: dict[str, Any] = await _json(response)
    return result


def collection_paths(namespaces: Sequence[str], group_version: str, plural: str) -> list[str]:
    """The collection's path in each namespace, or cluster-wide when none is given."""
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    if not namespaces:
        return [f"{root}/{plural}"]
    return [f"{root}/namespaces/{namespace}/{plural}" for namespace in namespaces]


class Kube:
    def __init__(self, api: LimitedApiClient, instance: str) -> None:
        self.api = api
        self.instance = instance
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)

    async def close(self) -> None:
        await self.api.close()  # type: ignore[no-untyped-call]

    async def list_pages(
        self, path: str, label_selector: str
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """The objects at a collection path, a page at a time, each with the list's
        resourceVersion: tens of thousands of objects are never all decoded at once."""
        token = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", "500"), ("continue", token)]
            page = await _json(await self._send("GET", path, {}, query=query))
            yield page.get("items") or [], page["metadata"]["resourceVersion"]
            token = page["metadata"].get("continue") or ""
            if not token:
                return

    async def watch_collection(
        self, path: str, label_selector: str, resource_version: str, seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a collection after `resource_version`, until the server ends the watch."""
        query = [
            ("watch", "true"),
            ("labelSelector", label_selector),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(seconds)),
        ]
        # The client's own deadline only guards against a connection that went silent.
        response = await self._send("GET", path, {}, query=query, seconds=seconds + 30)
        try:
            if response.status != 200:
                raise ApiError(response.status, (await response.read()).decode(errors="replace"))
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release()

    async def _send(
        self,
        method: str,
        path: str,
        path_params: Mapping[str, str],
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        seconds: float | None = None,
        priority: int = NORMAL,
    ) -> Any:
        """Send a request with a plain JSON body as is; the response, not yet read.

        The body goes past the client's serialization, which walks every value
        of it in Python to turn its models into JSON: a plain dict already is.
        """
        method, url, headers, _, post = await self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=dict(path_params),
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        result = await self.api.call_api(
            method,
            url,
            headers,
            body,
            post,
            _preload_content=False,
            _request_timeout=seconds,
            priority=priority,
        )
        return result.response

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create a Job; False when it exists already (the run happened: exactly once).

        The created object is not decoded: what the operator reads of it is what
        it sent, and the watch brings the rest.
        """
        response = await self._send(
            "POST",
            "/apis/batch/v1/namespaces/{namespace}/jobs",
            {"namespace": job["metadata"]["namespace"]},
            query=[("fieldManager", FIELD_MANAGER)],
            body=dict(job),
            priority=URGENT,
        )
        body = await response.read()
        if response.status == 409:
            return False
        if response.status != 201:
            raise ApiError(response.status, body.decode(errors="replace"))
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods; gone already is fine."""
        response = await self._send(
            "DELETE",
            "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            {"namespace": namespace, "name": name},
            query=[("propagationPolicy", "Background")],
        )
        await _json(response, expected=(200, 202, 404))

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; the spec is never written."""
        response = await self._send(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}/status",
            {"namespace": namespace, "name": name},
            query=[("fieldManager", FIELD_MANAGER)],
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        result: dict[str, Any] = await _json(response)
        return result

    async def post_event(
        self, task: TaskRef, type_: str, reason: str, message: str, action: str
    ) -> None:
        now = micro_time(datetime.now(UTC))
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{task.name[:200]}.{secrets.token_hex(8)}",
                "namespace": task.namespace,
            },
            "eventTime": now,
            "type": type_,
            "reason": reason,
            "note": message[:1024],
            "action": action,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance[:128],
            "regarding": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "namespace": task.namespace,
                "name": task.name,
                "uid": task.uid,
            },
        }
        response = await self._send(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
            {"namespace": task.namespace},
            body=event,
        )
        await _json(response)

    async def dry_run_job(self, job: Mapping[str, Any], seconds: float) -> dict[str, Any] | None:
        """Create a Job with dryRun=All: None if the API server would take it, else its Status.

        The request goes out as is, past the client's own model validation:
        the question is what the API server says. Unknown fields are refused
        (as `kubectl apply` of a Job would), not dropped with a warning. A
        Status comes back for 400 (cannot be decoded) and 422 (invalid); any
        other refusal (quota, a name in use, a terminating namespace) raises
        ApiError: those say nothing about whether the Job is well formed.
        """
        response = await self._send(
            "POST",
            "/apis/batch/v1/namespaces/{namespace}/jobs",
            {"namespace": job["metadata"]["namespace"]},
            query=[
                ("dryRun", "All"),
                ("fieldValidation", "Strict"),
                ("fieldManager", FIELD_MANAGER),
            ],
            body=dict(job),
            seconds=seconds,
        )
        if response.status in (400, 422):
            status: dict[str, Any] = json.loads(await response.read())
            return status
        await _json(response)
        return None

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.core.read_namespaced_secret_without_preload_content(
            name=name, namespace=namespace
        )
        return await json_unless_missing(response)

    async def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> bool:
        """Create a Secret; False when one of that name exists (someone else was first)."""
        response = await self.core.create_namespaced_secret_without_preload_content(
            namespace=namespace, body=cast(Any, secret), field_manager=FIELD_MANAGER
        )
        await _json(response, expected=(201, 409))
        return bool(response.status == 201)

    async def replace_secret(self, namespace: str, secret: Mapping[str, Any]) -> bool:
        """Replace a Secret at the resourceVersion it carries; False on a conflict."""
        response = await self.core.replace_namespaced_secret_without_preload_content(
            name=secret["metadata"]["name"],
            namespace=namespace,
            body=cast(Any, secret),
            field_manager=FIELD_MANAGER,
        )
        await _json(response, expected=(200, 409))
        return bool(response.status == 200)

    async def read_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        api = self.admission
        response = await api.read_validating_webhook_configuration_without_preload_content(name)
        return await json_unless_missing(response)

    async def patch_webhook_configuration(
        self, name: str, operations: Sequence[Mapping[str, Any]]
    ) -> None:
        """Apply a JSON patch (RFC 6902) to a ValidatingWebhookConfiguration."""
        api = self.admission
        response = await api.patch_validating_webhook_configuration_without_preload_content(
            name,
            body=cast(Any, list(operations)),
            field_manager=FIELD_MANAGER,
            _content_type="application/json-patch+json",
        )
        await _json(response)
