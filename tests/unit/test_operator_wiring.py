"""How the operator wires kopf: what it may leave out, and why that is safe."""

from __future__ import annotations

from typing import Any, cast

import kopf

from taskmaster.shell.metrics import Metrics
from taskmaster.shell.operator import NoDiffBase, register, settings
from taskmaster.shell.scheduler import Scheduler
from taskmaster.shell.webhook import register as register_webhook


def test_no_handler_needs_a_diff_base() -> None:
    # kopf's diff base serves change handlers (on.create/update/resume, daemons,
    # timers); with only event handlers it is built for nothing.
    registry = kopf.OperatorRegistry()
    metrics = Metrics()
    register(registry, Scheduler(cast(Any, None), metrics))
    register_webhook(registry, cast(Any, None), metrics, None)

    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert len(registry._watching.get_all_handlers()) == 1  # the tasks; Jobs and pods are ours


def test_the_diff_base_is_never_kept() -> None:
    storage = settings().persistence.diffbase_storage
    body = kopf.Body({"metadata": {"name": "t"}, "spec": {"schedule": "* * * * *"}})

    assert isinstance(storage, NoDiffBase)
    assert storage.fetch(body=body) is None
    assert storage.build(body=body) == {}
