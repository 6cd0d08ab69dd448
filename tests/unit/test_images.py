"""The images, built for real from the Dockerfiles (`make images`: buildah, no engine),
and their entrypoints run in them through runc, as the user the image names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(900)
# Inside the container: its own /tmp, which the image's user may write.
TERMINATION_LOG = "/tmp/termination-log"  # noqa: S108


def _can_build() -> str | None:
    """Why the images cannot be built here, or None."""
    if shutil.which("buildah") and shutil.which("mmdebstrap"):
        return None
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return None  # make images installs them
    return "make images needs buildah and mmdebstrap, or root to install them"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    reason = _can_build()
    if reason is not None:
        pytest.skip(reason)
    listing = tmp_path_factory.mktemp("images") / "images.json"
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "images.py"), "--output", str(listing)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    built: dict[str, str] = json.loads(listing.read_text())
    return built


def buildah(*args: str) -> str:
    return subprocess.run(
        ["buildah", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def config(reference: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(buildah("inspect", "--type", "image", reference))
    oci: dict[str, object] = found["OCIv1"]["config"]  # type: ignore[index]
    return oci


@pytest.fixture
def container(images: dict[str, str], request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A working container of the image named by the test's parameter, and the image."""
    reference = images[request.param]
    name = buildah("from", "--quiet", reference).strip()
    yield name, reference
    subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def run(container: str, image: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The image's entrypoint with `args`, as the image's user (runc, through buildah)."""
    oci = config(image)
    entrypoint = [str(part) for part in oci["Entrypoint"]]  # type: ignore[attr-defined]
    return subprocess.run(
        ["buildah", "run", "--user", str(oci["User"]), container, "--", *entrypoint, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("container", ["taskmaster-operator"], indirect=True)
def test_the_operator_image_starts_its_entrypoint_as_a_numeric_non_root_user(
    container: tuple[str, str],
) -> None:
    name, image = container
    oci = config(image)

    assert oci["User"] == "65532:65532"
    assert oci["Entrypoint"] == ["taskmaster-operator"]
    assert {"8080/tcp", "8081/tcp"} <= set(oci.get("ExposedPorts") or {})  # type: ignore[arg-type]
    started = run(name, image, "--help")
    assert started.returncode == 0, started.stderr
    assert "--leader-elect" in started.stdout
    assert "--worker-image" in started.stdout


@pytest.mark.parametrize("container", ["taskmaster-worker"], indirect=True)
def test_the_worker_image_runs_a_command_and_writes_its_termination_log(
    container: tuple[str, str],
) -> None:
    name, image = container

    result = run(
        name, image, "command", "--termination-log", TERMINATION_LOG, "--", "sh", "-c", "id -u"
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(buildah("run", name, "--", "cat", TERMINATION_LOG))
    assert summary["ok"] is True
    assert summary["excerpt"] == "65532\n"
    installed = buildah("run", name, "--", "python", "-m", "pip", "list", "--format=json")
    assert {p["name"] for p in json.loads(installed)} <= {"pip", "setuptools", "taskmaster"}


def test_a_warm_build_reuses_every_image(images: dict[str, str], tmp_path: Path) -> None:
    listing = tmp_path / "again.json"
    again = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "images.py"), "--output", str(listing)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert json.loads(listing.read_text()) == images
    assert again.stdout.count(": up to date") == len(images)
