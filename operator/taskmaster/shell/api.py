"""What the scheduler asks of the API server, and the fence in front of every write.

`Api` is the part of `shell/kube.py`'s Kube the scheduler uses, so that unit
tests hand it a fake that strict mypy checks against the real thing (as the
CronJob controller takes a `jobControlInterface`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from taskmaster.core.names import TaskRef


class Api(Protocol):
    async def create_job(self, job: Mapping[str, Any]) -> bool: ...

    async def delete_job(self, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def post_event(
        self, task: TaskRef, type_: str, reason: str, message: str, action: str
    ) -> None: ...


class Fenced(Exception):
    """This replica may no longer act: the reconcile stops before writing anything more."""


class Fence:
    """Asked before every write: none once leadership is no longer certain (lost, or
    frozen past it). `may_act` is the elector's word; without election, always yes."""

    def __init__(self) -> None:
        self.may_act: Callable[[], bool] = lambda: True

    def check(self, what: str) -> None:
        if not self.may_act():
            raise Fenced(f"not {what}: leadership is not certain")
