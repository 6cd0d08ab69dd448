"""No engine builds images here: each Dockerfile's install steps run in a fresh venv
instead, and the entrypoints they produce are run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OPERATOR_STEPS = [
    "python -m venv /opt/taskmaster",
    "/opt/taskmaster/bin/pip install --require-hashes -r requirements/runtime.txt",
    "/opt/taskmaster/bin/pip install --no-deps .",
]
WORKER_STEPS = [
    "python -m venv /opt/taskmaster",
    "/opt/taskmaster/bin/pip install --no-deps .",
]


def install(steps: list[str], dockerfile: Path, prefix: Path) -> Path:
    """Run a Dockerfile's install steps with /opt/taskmaster moved under `prefix`."""
    text = dockerfile.read_text()
    for step in steps:
        assert step in text, f"{dockerfile.name} no longer runs {step!r}: update this test"
        command = step.replace("/opt/taskmaster", str(prefix)).replace(
            "python ", f"{sys.executable} ", 1
        )
        subprocess.run(command.split(), cwd=ROOT, check=True, capture_output=True, timeout=600)
    return prefix / "bin"


@pytest.mark.timeout(900)
def test_operator_image_installs_and_starts(tmp_path: Path) -> None:
    bin_dir = install(OPERATOR_STEPS, ROOT / "Dockerfile", tmp_path / "opt")

    help_text = subprocess.run(
        [str(bin_dir / "taskmaster-operator"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--leader-elect" in help_text
    assert "--worker-image" in help_text


def test_worker_image_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    bin_dir = install(WORKER_STEPS, ROOT / "worker-image" / "Dockerfile", tmp_path / "opt")
    log = tmp_path / "termination-log"

    result = subprocess.run(
        [str(bin_dir / "taskmaster-worker"), "command", "--termination-log", str(log), "--",
         "sh", "-c", "echo from the image"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert json.loads(log.read_text())["excerpt"] == "from the image\n"
    installed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert {p["name"] for p in json.loads(installed)} <= {"pip", "setuptools", "taskmaster"}
