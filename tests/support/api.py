"""The API server as the scheduler sees it (`shell/api.py`'s `Api`), faked for unit
tests and checked against that Protocol by strict mypy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from taskmaster.core.names import TaskRef
from taskmaster.shell.api import Api
from taskmaster.shell.kube import ApiError
from taskmaster.shell.scheduler import Scheduler


class FakeApi:
    """Every request recorded in order, as `verb name` (`create`, `delete` a Job's name;
    `status`, `event` the task's); the tasks it was given, their status written back."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str]] = []
        # Runs while a status write is in flight (a Job finishing meanwhile, say).
        self.during_patch: Callable[[], None] = lambda: None
        self.fail_status = False

    def add(self, scheduler: Scheduler, task: dict[str, Any]) -> None:
        self.tasks[task["metadata"]["name"]] = task
        scheduler.cache.task_event("ADDED", task)

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        await asyncio.sleep(0)  # a request: other reconciles go on meanwhile
        self.calls.append(f"create {job['metadata']['name']}")
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {name}")

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.fail_status:
            raise ApiError(500, "etcd is away")
        self.during_patch()
        self.during_patch = lambda: None
        self.calls.append(f"status {name}")
        self.status = dict(status)
        task = self.tasks.get(name)
        if task is None:
            return {}
        version = str(int(task["metadata"]["resourceVersion"]) + 1)
        task = self.tasks[name] = {
            **task,
            "metadata": {**task["metadata"], "resourceVersion": version},
            "status": {**task.get("status", {}), **status},
        }
        return task

    async def post_event(
        self, task: TaskRef, type_: str, reason: str, message: str, action: str
    ) -> None:
        self.calls.append(f"event {task.name}")
        self.events.append((type_, reason))


class NoApi:
    """For tests in which the scheduler must not reach the API server at all."""

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        raise AssertionError("created a Job")

    async def delete_job(self, namespace: str, name: str) -> None:
        raise AssertionError("deleted a Job")

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        raise AssertionError("wrote a status")

    async def post_event(
        self, task: TaskRef, type_: str, reason: str, message: str, action: str
    ) -> None:
        raise AssertionError("posted an Event")


# Both satisfy the scheduler's Protocol (checked by mypy, in `make lint`).
_CHECKED: tuple[Api, ...] = (FakeApi(), NoApi())
