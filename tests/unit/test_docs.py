"""The documentation cannot drift from what it documents.

- docs/reference.md is generated from the CRD (`make docs`);
- docs/operations.md lists every metric the operator registers;
- deploy/prometheus/prometheusrule.yaml alerts on metrics that exist and links
  runbooks that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from taskmaster.shell.metrics import Metrics
from taskmaster.shell.slots import RunSlots
from tests.support.hack import load_script

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
OPERATIONS = ROOT / "docs" / "operations.md"
RULES = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"


@pytest.fixture(scope="module")
def crd_reference() -> ModuleType:
    return load_script("crd_reference")


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


# -- the metrics on the operations page --------------------------------------------

# Series a family exposes besides its own name, by type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported() -> dict[str, tuple[str, set[str]]]:
    """Every metric the operator registers: exposed name -> (type, label names)."""
    metrics = Metrics()
    metrics.count_phases(lambda: {"Scheduled": 1})
    metrics.count_slots(RunSlots(1, lambda: 0))  # with a cap: its gauge too
    # Per-task series exist once a task has them: one with every kind.
    task = metrics.tasks.of("ns", "t")
    task.count_started("schedule")
    task.count_finished("Succeeded", 1)
    task.active, task.next_schedule_time, task.last_schedule_time = 0, 1.0, 1.0
    labels = {
        wrapper._name: set(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    found: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        names = labels.get(family.name)
        if names is None:  # a custom collector: its samples carry the labels
            names = {label for sample in family.samples for label in sample.labels}
        exposed = family.name + ("_total" if family.type == "counter" else "")
        found[exposed] = (family.type, names)
    return found


def series() -> dict[str, set[str]]:
    """Every series name a query may use -> the labels it carries."""
    found: dict[str, set[str]] = {}
    for name, (type_, labels) in exported().items():
        base = name.removesuffix("_total")
        for suffix in _SUFFIXES[type_]:
            found[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    rows = re.findall(
        r"^\| `(taskmaster_\w+)` \| (\w+) \| ([^|]*) \|", OPERATIONS.read_text(), re.M
    )
    return {name: (type_, set(re.findall(r"`(\w+)`", labels))) for name, type_, labels in rows}


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    documented = documented_metrics()
    for name, (type_, labels) in exported().items():
        assert name in documented, f"{name} is not in the metrics table of docs/operations.md"
        assert documented[name] == (type_, labels), name


def test_the_metrics_table_lists_no_metric_that_does_not_exist() -> None:
    assert set(documented_metrics()) == set(exported())


# -- the alert rules -------------------------------------------------------------

_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    assert loaded["apiVersion"] == "monitoring.coreos.com/v1"
    assert loaded["kind"] == "PrometheusRule"
    return [rule for group in loaded["spec"]["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched) for every selector in a PromQL expression."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = _LABEL_LISTS.sub(" ", expr)
    expr = re.sub(r"\[[^]]*\]", " ", expr)  # range and subquery durations
    found = []
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call = match.groups()
        if call or name in _KEYWORDS:
            continue  # a function or an aggregation
        found.append((name, set(re.findall(r"(\w+)\s*[=!]~?", matchers or ""))))
    return found


def test_selectors_are_found_in_promql() -> None:
    assert selectors(
        'sum by (le) (rate(a_bucket{x="1", y!~"a|b"}[5m])) / on (i) b > 0.5 and c'
    ) == [("a_bucket", {"x", "y"}), ("b", set()), ("c", set())]


def test_the_rule_file_parses_and_each_alert_is_complete() -> None:
    alerts = rules()
    assert alerts
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_alerts_only_query_metrics_that_exist_with_labels_they_have() -> None:
    known = series()
    for rule in rules():
        used = selectors(rule["expr"])
        assert used, rule["alert"]
        for name, labels in used:
            assert name in known, f"{rule['alert']}: no metric {name}"
            assert labels <= known[name], f"{rule['alert']}: {name} has no label {labels}"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_each_runbook_url_points_to_a_runbook_section() -> None:
    page = OPERATIONS.read_text()
    sections = anchors(page)
    for rule in rules():
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path.endswith("docs/operations.md"), rule["alert"]
        assert anchor in sections, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        runbook = re.split(r"\n#{1,3} ", page.split(f"\n### {rule['alert']}\n", 1)[1])[0]
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Fix.**"):
            assert part in runbook, f"{rule['alert']}: the runbook has no {part}"


# -- links between the pages -----------------------------------------------------

PAGES = [
    ROOT / "README.md",
    REFERENCE,
    OPERATIONS,
    *(
        ROOT / "docs" / f"{name}.md"
        for name in ("comparison", "schedules", "design", "kubectl-plugin", "real-node")
    ),
]
# Pages that other parts of the install work add; linked before they land.
ADDED_ELSEWHERE = {
    "docs/webhook.md",
    "docs/argocd.md",
    "docs/kubectl-plugin.md",
    "deploy/argocd/application.yaml",
    "deploy/helm/taskmaster/README.md",
}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        relative = file.relative_to(ROOT).as_posix()
        if not file.exists():
            assert relative in ADDED_ELSEWHERE, f"{page.name}: broken link {target}"
            continue
        if anchor:
            assert anchor in anchors(file.read_text()), f"{page.name}: no #{anchor} in {relative}"
