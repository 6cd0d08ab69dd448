"""Faults injected into the local cluster's own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.wait import until

# Restarted control-plane processes outlive the test that started them (the
# cluster's teardown stops them by pid); holding them here keeps Python from
# warning about running children when the Popen objects are collected.
_RESTARTED: list[subprocess.Popen[bytes]] = []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def component(cluster_dir: Path, name: str) -> dict[str, Any]:
    for document in yaml.safe_load_all((cluster_dir / "kwok.yaml").read_text()):
        if document and document.get("kind") == "KwokctlConfiguration":
            found: dict[str, Any] = next(c for c in document["components"] if c["name"] == name)
            return found
    raise LookupError(f"no component {name} in {cluster_dir}")


def restart_component(
    cluster_dir: Path, name: str, down_for: float, extra_args: Sequence[str] = ()
) -> None:
    """Stop one control-plane process, keep it down, start it again as kwokctl did.

    `extra_args` come after kwokctl's own: a flag given again overrides its value.
    """
    process_spec = component(cluster_dir, name)
    pid_file = cluster_dir / "pids" / f"{name}.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)  # a crash; a graceful stop can take a minute
    until(lambda: not _alive(pid), timeout=30, message=f"{name} stopped")
    time.sleep(down_for)  # the outage itself
    with (cluster_dir / "logs" / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [process_spec["binary"], *process_spec["args"], *extra_args],
            cwd=process_spec["workDir"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _RESTARTED.append(process)
    # `make cluster-down` stops what the pid file names.
    pid_file.write_text(str(process.pid))
