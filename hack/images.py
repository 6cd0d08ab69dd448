"""Build the operator and worker images from the real Dockerfiles, without a Docker engine.

buildah builds them, daemonless. The Dockerfiles' public base image cannot be
pulled where no registry is reachable, so a stand-in base is made from
Debian's own packages with mmdebstrap (Python 3.11 with venv, as the public
image has it) and passed through their `PYTHON_IMAGE` build argument, whose
default stays the public image: `docker build` works unchanged. The local
cluster's real node also gets its sandbox ("pause") image from here: one
static binary built from hack/pause/pause.go.

Every image is tagged by what it is made of (the base by its recipe, the
others by their Dockerfile, build context files and base), so a warm run finds
its tags and builds nothing. The references built are written to
`.tools/images.json` for what runs them next.

As root, a missing buildah or mmdebstrap is installed from the distribution's
packages (apt-get); otherwise the message says what to install.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "localhost"
# The stand-in base: the public image's Debian release and what the Dockerfiles use of it.
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# runc runs the build steps (buildah only recommends it).
TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "runc": "runc"}
# The build trusts what this machine trusts to reach the package index (a
# company proxy's CA, a pip index): mounted while building, never copied in.
BUILD_MOUNTS = (Path("/etc/ssl/certs"), Path("/etc/pip.conf"))


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    # The build context the Dockerfile copies from.
    sources: tuple[str, ...]


IMAGES = (
    Image(
        "taskmaster-operator",
        "Dockerfile",
        ("requirements/runtime.txt", "pyproject.toml", "README.md", "operator"),
    ),
    Image(
        "taskmaster-worker", "worker-image/Dockerfile", ("pyproject.toml", "README.md", "operator")
    ),
)


def _run(command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def ensure_tools() -> None:
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"make images needs {' and '.join(missing)} (Debian and Ubuntu: apt-get install"
            f" {' '.join(missing)}); run it as root to have them installed"
        )
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", *missing], env=env)


def exists(reference: str) -> bool:
    found = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference], capture_output=True, check=False
    )
    return found.returncode == 0


def _files(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            skipped = "__pycache__" in found.parts or found.suffix == ".pyc"
            if found.is_file() and not skipped and ".egg-info" not in str(found):
                yield found


def content_tag(*parts: str | Path) -> str:
    """A tag naming the content: the text of each string, the bytes of each file."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(part.relative_to(ROOT).as_posix().encode() + b"\0" + part.read_bytes())
        else:
            digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def up_to_date(reference: str) -> bool:
    if exists(reference):
        print(f"{reference}: up to date")
        return True
    return False


def commit_from_scratch(reference: str, content: Path, destination: str, *config: str) -> None:
    """An image of one file (a tarball is unpacked) and its configuration, with no base."""
    container = _run(["buildah", "from", "scratch"], capture_output=True).stdout.strip()
    try:
        _run(["buildah", "add", "--quiet", container, str(content), destination])
        _run(["buildah", "config", *config, container])
        _run(["buildah", "commit", "--quiet", container, reference], capture_output=True)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def build_base() -> str:
    recipe = json.dumps({"suite": SUITE, "packages": BASE_PACKAGES, "variant": "minbase"})
    reference = f"{REPOSITORY}/taskmaster-python-base:{content_tag(recipe)}"
    if up_to_date(reference):
        return reference
    print(f"{reference}: mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="taskmaster-base-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        _run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(tarball),
            ]
        )
        commit_from_scratch(reference, tarball, "/", "--cmd", '["python3"]')
    return reference


def build(image: Image, base: str) -> str:
    files = [ROOT / image.dockerfile, *_files(image.sources)]
    reference = f"{REPOSITORY}/{image.name}:{content_tag(base, *files)}"
    if up_to_date(reference):
        return reference
    print(f"{reference}: building {image.dockerfile}", flush=True)
    mounts = [f"--volume={path}:{path}:ro" for path in BUILD_MOUNTS if path.exists()]
    _run(
        [
            "buildah",
            "build",
            "--quiet",
            "--isolation=chroot",
            *mounts,
            f"--build-arg=PYTHON_IMAGE={base}",
            f"--file={ROOT / image.dockerfile}",
            f"--tag={reference}",
            str(ROOT),
        ],
        stdout=subprocess.DEVNULL,
    )
    return reference


def build_pause() -> str:
    """The real node's sandbox image: one static binary, compiled here with Go."""
    source = ROOT / "hack" / "pause" / "pause.go"
    reference = f"{REPOSITORY}/taskmaster-pause:{content_tag(source)}"
    if up_to_date(reference):
        return reference
    print(f"{reference}: go build {source.relative_to(ROOT)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="taskmaster-pause-") as scratch:
        binary = Path(scratch) / "pause"
        _run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), str(source)],
            cwd=scratch,
            env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
        )
        commit_from_scratch(
            reference, binary, "/pause", "--entrypoint", '["/pause"]', "--user", "65535"
        )
    return reference


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=ROOT / ".tools" / "images.json", help="where to list them"
    )
    options = parser.parse_args(argv)
    ensure_tools()
    base = build_base()
    built = (
        {"base": base}
        | {image.name: build(image, base) for image in IMAGES}
        | {"taskmaster-pause": build_pause()}
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(built, indent=2) + "\n")
    for name, reference in built.items():
        size = _run(
            ["buildah", "images", "--format", "{{.Size}}", reference], capture_output=True
        ).stdout.strip()
        print(f"{name}: {reference} ({size})")


if __name__ == "__main__":
    main()
