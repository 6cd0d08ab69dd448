"""`kubectl apply` of each bad example in tests/corpus/invalid: refused with a message
naming the field, or (where only the operator can tell) marked Invalid by it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.tasks import Tasks, condition, phase

CORPUS = Path(__file__).parent.parent / "corpus" / "invalid"
KUBECTL = Path(__file__).parents[2] / ".tools" / "bin" / "kubectl"


def cases(outcome: str) -> list[object]:
    """The corpus files whose first line says `# expect: <outcome> <field>`."""
    found = []
    for path in sorted(CORPUS.glob("*.yaml")):
        expected, field = path.read_text().splitlines()[0].removeprefix("# expect: ").split(" ", 1)
        if expected == outcome:
            found.append(pytest.param(path, field, id=path.stem))
    return found


def apply(kubeconfig: Path, namespace: str, path: Path) -> subprocess.CompletedProcess[str]:
    kubectl = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl") or "kubectl"
    return subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "apply", "-n", namespace, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(("path", "field"), cases("refused"))
def test_refused_at_apply_time(
    kubeconfig: Path, namespace: str, crds: list[str], path: Path, field: str
) -> None:
    result = apply(kubeconfig, namespace, path)

    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize(("path", "field"), cases("invalid"))
def test_marked_invalid_by_the_operator(
    kubeconfig: Path, namespace: str, tasks: Tasks, path: Path, field: str
) -> None:
    result = apply(kubeconfig, namespace, path)
    assert result.returncode == 0, result.stderr

    task = tasks.wait(path.stem, lambda t: phase(t) == "Invalid")

    ready = condition(task, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith(f"{field}: "), ready["message"]
    tasks.wait_event(path.stem, "InvalidSpec", ready["message"])
    assert tasks.jobs(path.stem) == []
