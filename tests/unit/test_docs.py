"""The documentation cannot drift from what it documents.

- docs/reference.md is generated from the CRD (`make docs`);
- docs/operations.md lists every metric the operator registers;
- deploy/prometheus/prometheusrule.yaml alerts on metrics that exist and links
  runbooks that exist.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"


@pytest.fixture(scope="module")
def crd_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "hack_crd_reference", ROOT / "hack" / "crd_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (ROOT / "crds" / "scheduledtasks.taskmaster.dev.yaml").read_text()
    )
    return loaded


# -- the CRD reference -----------------------------------------------------------


def test_reference_is_generated_from_the_current_crd(crd_reference: ModuleType) -> None:
    expected = crd_reference.render(crd())
    assert REFERENCE.read_text() == expected, (
        "docs/reference.md is stale: run `make docs` and commit the result"
    )


def test_reference_rendering_is_deterministic(crd_reference: ModuleType) -> None:
    assert crd_reference.render(crd()) == crd_reference.render(crd())


def test_reference_names_every_field_rule_and_column(crd_reference: ModuleType) -> None:
    text = crd_reference.render(crd())
    version = crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    for tree in ("spec", "status"):
        for path, _, _ in crd_reference.fields(schema[tree], tree):
            assert f"| `{path}` |" in text, path
        for _, message, _ in crd_reference.rules(schema[tree], tree):
            assert message in text
    for column in version["additionalPrinterColumns"]:
        assert f"`{column['jsonPath']}`" in text


def test_reference_quotes_the_defaults_named_in_descriptions(crd_reference: ModuleType) -> None:
    text = crd_reference.render(crd())
    for field, default in (
        ("spec.startingDeadlineSeconds", "60"),
        ("spec.concurrencyPolicy", "Allow"),
        ("spec.missedRunPolicy", "RunLatest"),
        ("spec.timeZone", "UTC"),
        ("spec.historyLimit", "10"),
        ("spec.retry.backoff.maxSeconds", "3600"),
    ):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field}` |"))
        assert row.split(" | ")[2] == f"`{default}`", row


def test_table_cells_escape_pipes(crd_reference: ModuleType) -> None:
    assert crd_reference.cell("a || b\n c") == "a \\|\\| b c"
