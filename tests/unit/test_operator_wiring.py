"""What the operator leaves to kopf: serving the admission webhook, nothing else."""

from __future__ import annotations

from typing import Any, cast

import kopf

from taskmaster.shell.metrics import Metrics
from taskmaster.shell.webhook import register


def test_kopf_serves_the_webhook_and_watches_nothing() -> None:
    # Tasks, Jobs and pods come through the operator's own watches: a kopf
    # handler on any of them would list and watch the same objects again.
    registry = kopf.OperatorRegistry()
    register(registry, cast(Any, None), Metrics(), None)

    assert registry._watching.get_all_handlers() == []
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert registry._indexing.get_all_handlers() == []
    assert [handler.id for handler in registry._webhooks.get_all_handlers()] == [
        "validate-scheduledtask"
    ]
