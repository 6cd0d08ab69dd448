"""The kubectl plugin as a user at a shell runs it, and its tables as that user reads them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
SCRIPTS = Path(sys.executable).parent
PLUGIN = SCRIPTS / "kubectl-taskmaster"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class User:
    """Someone at a shell with the cluster's kubeconfig (but not in $KUBECONFIG)."""

    kubeconfig: Path
    namespace: str

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"
        # The flags, not the environment, must choose the cluster.
        env["KUBECONFIG"] = str(self.kubeconfig.parent / "no-such-kubeconfig")
        return env

    def _run(self, command: list[str]) -> Result:
        done = subprocess.run(
            command, capture_output=True, text=True, env=self._env(), timeout=90, check=False
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def kubectl(self, *args: str) -> Result:
        """`kubectl taskmaster ARGS -n NS --kubeconfig …`: kubectl finds the plugin on PATH."""
        if not KUBECTL.exists():
            pytest.skip("no kubectl in .tools/bin: run `make tools`")
        return self._run(
            [
                str(KUBECTL),
                "taskmaster",
                *args,
                "-n",
                self.namespace,
                "--kubeconfig",
                str(self.kubeconfig),
            ]
        )

    def plugin(self, *args: str, namespace: bool = True) -> Result:
        """The console script itself, choosing the kubeconfig's context by name."""
        context = yaml.safe_load(self.kubeconfig.read_text())["current-context"]
        flags = ["--kubeconfig", str(self.kubeconfig), "--context", context]
        return self._run([str(PLUGIN), *flags, *args, *(["-n", self.namespace] * namespace)])


def table(output: str) -> list[dict[str, str]]:
    """A kubectl-style table as rows of {header: value}, cut at the headers' columns."""
    header, *lines = output.rstrip("\n").splitlines()
    found = list(re.finditer(r"\S+(?: \S+)*", header))
    names = [match.group() for match in found]
    starts = [match.start() for match in found]
    ends = [*starts[1:], None]
    return [
        {
            name: line[start:end].strip()
            for name, start, end in zip(names, starts, ends, strict=True)
        }
        for line in lines
    ]


def ok(result: Result) -> str:
    assert result.code == 0, f"exit {result.code}: {result.err}"
    return result.out
