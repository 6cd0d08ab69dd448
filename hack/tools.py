#!/usr/bin/env python3
"""Build the local cluster's binaries from their Go modules and cache them.

Nothing is downloaded but Go modules through the module proxy: every binary is
compiled here with the machine's Go toolchain.  Builds are cached outside the
work tree, one directory per component and version, so a warm `make tools`
only re-creates the links in `.tools/bin/`.

Kubernetes and etcd cannot be `go install`ed at a version because their
go.mod files carry `replace` directives pointing into their own source trees.
For those a small wrapper module is generated whose go.mod requires the
upstream module and swaps each local-path replacement for the published module
of the same release (Kubernetes' staging modules are tagged v0.X.Y for v1.X.Y).
The list is derived from the upstream go.mod, never written by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.36.1"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# The real node's runtime: Kubernetes 1.36 supports containerd 2.x only.
CONTAINERD_VERSION = "v2.4.2"
HELM_VERSION = "v3.22.0"
# CRDs of other projects that the chart's optional objects need on a test server.
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
CERT_MANAGER_VERSION = "v1.19.1"


# etcd's main package is its module root, whose last element is "v3".
RENAMES = {"v3": "etcd"}


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    packages: tuple[str, ...]
    # Version of the published modules that replace local-path replacements.
    replacement_version: str | None = None
    ldflags: tuple[str, ...] = field(default=())
    tags: tuple[str, ...] = field(default=())

    @property
    def binaries(self) -> tuple[str, ...]:
        names = (package.rsplit("/", 1)[-1] for package in self.packages)
        return tuple(RENAMES.get(name, name) for name in names)


def _kubernetes_ldflags(version: str) -> tuple[str, ...]:
    major, minor, _ = version.lstrip("v").split(".")
    prefix = "k8s.io/component-base/version"
    return tuple(
        f"-X {prefix}.{key}={value}"
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        )
    )


def _kubernetes(name: str, commands: tuple[str, ...]) -> Component:
    return Component(
        name=name,
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        packages=tuple(f"k8s.io/kubernetes/cmd/{cmd}" for cmd in commands),
        replacement_version="v0." + KUBERNETES_VERSION.split(".", 1)[1],
        ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    )


COMPONENTS = (
    Component(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        packages=("go.etcd.io/etcd/server/v3",),
        replacement_version=ETCD_VERSION,
    ),
    _kubernetes(
        "kubernetes",
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ),
    # The real node's binaries: the same release as the control plane's, kept
    # apart so that the control plane's cache stays valid.
    _kubernetes("kubernetes-node", ("kubelet", "kube-proxy")),
    Component(
        name="containerd",
        module="github.com/containerd/containerd/v2",
        version=CONTAINERD_VERSION,
        packages=tuple(
            f"github.com/containerd/containerd/v2/cmd/{cmd}"
            for cmd in ("containerd", "containerd-shim-runc-v2", "ctr")
        ),
        ldflags=(f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",),
        # Snapshotters that need C libraries; overlayfs is the one used.
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
    ),
    Component(
        name="kwok",
        module="sigs.k8s.io/kwok",
        version=KWOK_VERSION,
        packages=("sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok/cmd/kwokctl"),
    ),
    Component(
        name="helm",
        module="helm.sh/helm/v3",
        version=HELM_VERSION,
        packages=("helm.sh/helm/v3/cmd/helm",),
    ),
)


@dataclass(frozen=True)
class Manifests:
    """Files (CRDs) taken as published from a Go module's source."""

    name: str
    module: str
    version: str
    files: tuple[str, ...]


MANIFESTS = (
    Manifests(
        name="prometheus-operator",
        module="github.com/prometheus-operator/prometheus-operator",
        version=PROMETHEUS_OPERATOR_VERSION,
        files=("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",),
    ),
    Manifests(
        name="cert-manager",
        module="github.com/cert-manager/cert-manager",
        version=CERT_MANAGER_VERSION,
        files=("deploy/crds/cert-manager.io_certificates.yaml",),
    ),
)


def log(message: str) -> None:
    print(f"[tools] {message}", file=sys.stderr, flush=True)


def go(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return result.stdout


def upstream_go_mod(component: Component, workdir: Path) -> dict:
    info = json.loads(
        go("mod", "download", "-json", f"{component.module}@{component.version}", cwd=workdir)
    )
    return json.loads(go("mod", "edit", "-json", info["GoMod"], cwd=workdir))


def wrapper_go_mod(component: Component, upstream: dict) -> str:
    lines = [
        "// Generated by hack/tools.py: builds the binaries of",
        f"// {component.module}@{component.version}.",
        "module taskmaster.local/build",
        "",
        f"go {upstream['Go']}",
        "",
    ]
    for godebug in upstream.get("Godebug") or ():
        lines.append(f"godebug {godebug['Key']}={godebug['Value']}")
    lines += ["", f"require {component.module} {component.version}", ""]
    for replace in upstream.get("Replace") or ():
        new_path = replace["New"]["Path"]
        if not new_path.startswith("."):
            # A module-to-module replacement: keep it as upstream has it.
            new = f"{new_path} {replace['New']['Version']}"
        elif "FORBIDDEN" in new_path:
            # Upstream's guard against importing a module at all; irrelevant here.
            continue
        else:
            new = f"{replace['Old']['Path']} {component.replacement_version}"
        lines.append(f"replace {replace['Old']['Path']} => {new}")
    return "\n".join(lines) + "\n"


def build(component: Component, cache: Path) -> Path:
    home = cache / f"{component.name}-{component.version}"
    bindir = home / "bin"
    marker = home / ".complete"
    if marker.exists():
        log(f"{component.name} {component.version}: cached in {home}")
        return bindir
    started = time.monotonic()
    log(
        f"{component.name} {component.version}: building {', '.join(component.binaries)}"
        " (a cold build takes minutes)"
    )
    shutil.rmtree(home, ignore_errors=True)
    src = home / "src"
    src.mkdir(parents=True)
    upstream = upstream_go_mod(component, src)
    (src / "go.mod").write_text(wrapper_go_mod(component, upstream))
    bindir.mkdir()
    env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local"}
    ldflags = " ".join(("-s", "-w", *component.ldflags))
    for package, binary in zip(component.packages, component.binaries, strict=True):
        log(f"  go build {package}")
        go(
            "build",
            "-trimpath",
            f"-tags={','.join(component.tags)}",
            f"-ldflags={ldflags}",
            "-o",
            str(bindir / binary),
            package,
            cwd=src,
            env=env,
        )
    marker.write_text(f"{time.time()}\n")
    log(f"{component.name} {component.version}: built in {time.monotonic() - started:.0f}s")
    return bindir


def fetch(manifests: Manifests, cache: Path) -> Path:
    """The module's files, copied into the cache once."""
    home = cache / f"{manifests.name}-{manifests.version}-manifests"
    marker = home / ".complete"
    if marker.exists():
        log(f"{manifests.name} {manifests.version} manifests: cached in {home}")
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    info = json.loads(
        go("mod", "download", "-json", f"{manifests.module}@{manifests.version}", cwd=home)
    )
    for name in manifests.files:
        shutil.copyfile(Path(info["Dir"]) / name, home / Path(name).name)
    marker.write_text(f"{time.time()}\n")
    log(f"{manifests.name} {manifests.version} manifests: fetched into {home}")
    return home


def link_all(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(p.name for p in source.iterdir() if not p.name.startswith(".")):
        link = target / name
        link.unlink(missing_ok=True)
        link.symlink_to(source / name)


def default_cache() -> Path:
    if "TASKMASTER_CACHE" in os.environ:
        return Path(os.environ["TASKMASTER_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "taskmaster"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--bin", type=Path, default=Path(".tools/bin"))
    parser.add_argument("--versions", action="store_true", help="print the pinned versions")
    args = parser.parse_args()
    if args.versions:
        for item in (*COMPONENTS, *MANIFESTS):
            print(f"{item.name}={item.version}")
        return 0
    for component in COMPONENTS:
        link_all(build(component, args.cache), args.bin)
    log(f"linked into {args.bin}")
    # Next to bin/: .tools/crds/ by default.
    crds = args.bin.parent / "crds"
    for manifests in MANIFESTS:
        link_all(fetch(manifests, args.cache), crds)
    log(f"linked into {crds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
