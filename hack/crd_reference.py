#!/usr/bin/env python3
"""Render docs/reference.md from the ScheduledTask CRD (`make docs`).

Everything comes from the CRD: the field trees of spec and status (path, type,
default, constraints, required, description), the CEL rules' messages and the
printer columns. The output is deterministic; tests/unit/test_docs.py fails
when the committed page differs from it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "scheduledtasks.taskmaster.dev.yaml"
OUTPUT = ROOT / "docs" / "reference.md"

Node = Mapping[str, Any]

# The CRD declares no schema defaults (the operator applies them); the
# descriptions name them as "Default X." or "X (default)".
_DEFAULT = (re.compile(r"\bDefault ([^\s]+?)\.(?:\s|$)"), re.compile(r"(\w+) \(default\)"))


def cell(text: object) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: object) -> str:
    return f"`{text}`"


def type_of(node: Node) -> str:
    kind = str(node.get("type", "any"))
    if kind == "array":
        return f"array of {type_of(node.get('items') or {})}"
    if "format" in node:
        return f"{kind} ({node['format']})"
    return kind


def default_of(node: Node) -> str:
    if "default" in node:
        return code(yaml.safe_dump(node["default"], default_flow_style=True).strip())
    description = str(node.get("description", ""))
    for pattern in _DEFAULT:
        found = pattern.search(description)
        if found:
            return code(found.group(1))
    return ""


def constraints_of(node: Node) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(code(v) for v in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        parts.append(f"{low} to {high}")
    elif low is not None:
        parts.append(f"at least {low}")
    elif high is not None:
        parts.append(f"at most {high}")
    for key, words in (("minLength", "length at least"), ("maxLength", "length at most")):
        if key in node:
            parts.append(f"{words} {node[key]}")
    if "pattern" in node:
        parts.append(f"matches {code(node['pattern'])}")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys") or ())
        parts.append(f"list map keyed by {keys}")
    if node.get("x-kubernetes-preserve-unknown-fields"):
        parts.append("free-form (not validated by the schema)")
    if node.get("x-kubernetes-validations"):
        parts.append("CEL rules (below)")
    return "; ".join(parts)


def fields(node: Node, path: str) -> Iterator[tuple[str, Node, bool]]:
    """(path, schema, required) for every field under node, depth first in file order."""
    if node.get("type") == "array":
        node = node.get("items") or {}
        path += "[]"
    required = set(node.get("required") or ())
    for name, child in (node.get("properties") or {}).items():
        child_path = f"{path}.{name}"
        yield child_path, child, name in required
        yield from fields(child, child_path)


def rules(node: Node, path: str) -> Iterator[tuple[str, str, str]]:
    """(path, message, rule) for every CEL rule under node."""
    for rule in node.get("x-kubernetes-validations") or ():
        yield path, str(rule.get("message", "")), str(rule["rule"])
    for child_path, child, _ in fields(node, path):
        for rule in child.get("x-kubernetes-validations") or ():
            yield child_path, str(rule.get("message", "")), str(rule["rule"])


def field_table(root: Node, name: str) -> list[str]:
    lines = [
        "| Field | Type | Default | Constraints | Required | Description |",
        "|---|---|---|---|---|---|",
    ]
    for path, node, required in fields(root, name):
        row = (
            code(path),
            cell(type_of(node)),
            default_of(node),
            cell(constraints_of(node)),
            "yes" if required else "",
            cell(node.get("description", "")),
        )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(crd: Node) -> str:
    spec = crd["spec"]
    names = spec["names"]
    (version,) = (v for v in spec["versions"] if v.get("storage"))
    schema = version["schema"]["openAPIV3Schema"]
    properties = schema["properties"]
    served = ", ".join(
        f"{v['name']}{' (storage)' if v.get('storage') else ''}"
        for v in spec["versions"]
        if v.get("served")
    )
    out = [
        f"# {names['kind']} reference",
        "",
        f"<!-- Generated from {CRD.relative_to(ROOT).as_posix()} by hack/crd_reference.py;"
        " do not edit: run `make docs`. -->",
        "",
        f"API group `{spec['group']}`, served versions: {served}. Kind `{names['kind']}`,"
        f" plural `{names['plural']}`, short names"
        f" {', '.join(code(n) for n in names.get('shortNames') or ())},"
        f" categories {', '.join(code(c) for c in names.get('categories') or ())};"
        f" {spec['scope'].lower()}. Subresources:"
        f" {', '.join(code(s) for s in version.get('subresources') or {}) or 'none'}.",
        "",
        cell(schema.get("description", "")),
        "",
    ]
    if not any(
        "default" in node
        for tree in ("spec", "status")
        for _, node, _ in fields(properties[tree], tree)
    ):
        out += [
            "The schema sets no defaults: the operator applies those the descriptions name"
            " (the Default column), and a field left out stays out of the object.",
            "",
        ]
    out += [
        "`kubectl explain scheduledtask.spec` shows the same descriptions.",
        "",
        "## Printer columns",
        "",
        "`kubectl get scheduledtasks` shows the columns of priority 0; `-o wide` adds the others.",
        "",
        "| Column | Type | JSONPath | Priority |",
        "|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns") or ():
        out.append(
            f"| {cell(column['name'])} | {column['type']} | {code(column['jsonPath'])}"
            f" | {column.get('priority', 0)} |"
        )
    out += [
        "",
        "## Validation rules",
        "",
        "CEL rules checked by the API server on create and update, with the message"
        " `kubectl apply` prints when one fails. What CEL cannot check (cron syntax, time"
        " zones) is the validating webhook's part: see [webhook.md](webhook.md).",
        "",
        "| Where | Message | Rule |",
        "|---|---|---|",
    ]
    for tree in ("spec", "status"):
        for path, message, rule in rules(properties[tree], tree):
            out.append(f"| {code(path)} | {cell(message)} | {code(cell(rule))} |")
    for tree in ("spec", "status"):
        node = properties[tree]
        out += ["", f"## {tree}", "", cell(node.get("description", "")), ""]
        out += field_table(node, tree)
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd", type=Path, default=CRD)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    options = parser.parse_args(argv)
    text = render(yaml.safe_load(options.crd.read_text()))
    options.output.write_text(text)


if __name__ == "__main__":
    main()
