"""The CRD is the user's manual (`kubectl explain`) and must match the contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CRD = Path(__file__).parents[2] / "crds" / "scheduledtasks.taskmaster.dev.yaml"
SPEC_FIELDS = {
    "schedule", "schedules", "runAt", "every", "timeZone", "startAt", "endAt", "maxRuns",
    "jitterSeconds", "suspend", "concurrencyPolicy", "startingDeadlineSeconds", "missedRunPolicy",
    "timeoutSeconds", "retry", "successfulJobsHistoryLimit", "failedJobsHistoryLimit",
    "historyLimit", "stopAfterConsecutiveFailures", "jobTemplate", "task",
}  # fmt: skip
STATUS_FIELDS = {
    "phase", "nextRunTime", "lastScheduleTime", "lastSuccessfulTime", "lastFailureTime",
    "active", "history", "succeededRuns", "failedRuns", "missedRuns", "conditions",
    "observedGeneration",
}  # fmt: skip


def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


def schema() -> dict[str, Any]:
    found: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return found


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    if "items" in node:
        yield from fields(node["items"], f"{path}[]")


def test_every_field_has_a_description() -> None:
    undocumented = [
        path
        for path, node in fields(schema(), "")
        if not node.get("description") and not path.startswith(".metadata")
    ]

    assert undocumented == []


def test_names_match_the_contract() -> None:
    spec = crd()["spec"]

    assert spec["group"] == "taskmaster.dev"
    assert spec["names"]["kind"] == "ScheduledTask"
    assert spec["names"]["plural"] == "scheduledtasks"
    assert spec["names"]["singular"] == "scheduledtask"
    assert spec["names"]["shortNames"] == ["st"]
    assert spec["names"]["categories"] == ["taskmaster"]
    version = spec["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_spec_and_status_fields_are_the_contract_s() -> None:
    properties = schema()["properties"]

    assert set(properties["spec"]["properties"]) == SPEC_FIELDS
    assert set(properties["status"]["properties"]) >= STATUS_FIELDS
    history = properties["status"]["properties"]["history"]["items"]["properties"]
    assert set(history) == {
        "scheduledTime", "jobName", "attempt", "trigger", "startTime", "completionTime",
        "result", "reason", "message",
    }  # fmt: skip


def test_printer_columns() -> None:
    columns = [c["name"] for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]]

    shown = [c for c in columns if c not in ("Every", "Run at")]
    assert shown == [
        "Schedule", "Timezone", "Suspend", "Phase", "Last run", "Next run", "Last result", "Age",
    ]  # fmt: skip
