"""Knative Serving for one release, from its Go module: images and manifests.

Releases are ko builds (hack/generate-yamls.sh): each ``ko://knative.dev/serving/cmd/X``
in ``config/core`` becomes an image whose entrypoint is ``/ko-app/X``, run as a non-root
user; ``serving-core.yaml`` is ``config/core`` resolved, ``serving-crds.yaml`` its CRDs.
Here the same binaries are built from ``knative.dev/serving@v0.(X+27).Y`` and the same
files resolved to local ``dev.local/...`` images, which kind loads into the nodes.

The module zip has no symbolic links, and ``config/core`` links a few files from
``knative.dev/networking`` and ``knative.dev/caching`` (the CRDs of Ingress, Certificate,
ServerlessService and Image, and config-network): those are read from the versions of
those modules serving's go.mod requires, at the paths the links point to.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
import yaml

from ..host.docker_engine import state_dir
from . import gomod
from .kubernetes import binary_image
from .rootfs import ImageOutcome, ImagesError

Progress = Callable[[str], None]
RECIPE = 1
SERVING = "knative.dev/serving"
#: the commands every release's config/core names; a release may name more (1.10: the
#: domain-mapping controller and its webhook), found by :func:`commands_named`
COMMANDS = ("controller", "activator", "autoscaler", "webhook", "queue")
IMAGE_REPO = "dev.local/knative-drain/serving"
KO_USER = "65532:65532"
# config/core path -> (module whose file it links to, path in that module)
LINKED_FILES = {
    "300-imagecache.yaml": ("knative.dev/caching", "config/image.yaml"),
    "300-resources/certificate.yaml": ("knative.dev/networking", "config/certificate.yaml"),
    "300-resources/domain-claim.yaml": ("knative.dev/networking", "config/domain-claim.yaml"),
    "300-resources/ingress.yaml": ("knative.dev/networking", "config/ingress.yaml"),
    "300-resources/serverlessservice.yaml": (
        "knative.dev/networking",
        "config/serverlessservice.yaml",
    ),
    "configmaps/network.yaml": ("knative.dev/networking", "config/config-network.yaml"),
}
_KO_REF = re.compile(r"ko://([A-Za-z0-9._/-]+)")


@dataclass
class ServingBuild:
    """One release's images (command -> outcome) and its manifests directory."""

    version: str
    module_version: str
    images: dict[str, ImageOutcome]
    manifests_dir: Path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def module_version(version: str) -> str:
    """Knative 1.X.Y is Go module v0.(X+27).Y."""
    match = re.fullmatch(r"1\.(\d+)\.(\d+)", version)
    if not match:
        raise ImagesError(f"Knative version {version!r}: expected 1.X.Y, e.g. 1.14.2")
    return f"v0.{int(match[1]) + 27}.{match[2]}"


def image_ref(command: str, version: str) -> str:
    return f"{IMAGE_REPO}/{command}:{version}"


def required_version(go_mod: str, module: str) -> str:
    """The version of ``module`` a go.mod requires."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.MULTILINE)
    if not match:
        raise ImagesError(f"go.mod does not require {module}")
    return match[1]


def config_files(
    module_dir: Path, subdir: str, linked: dict[str, tuple[str, str]], go_mod: str
) -> list[tuple[str, str]]:
    """(relative path, text) of every YAML file under ``subdir`` in ko's walk order
    (lexical), with the files the zip lost as symbolic links put back in place."""
    root = module_dir / subdir
    files = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.yaml")}
    for rel, (module, path) in linked.items():
        if rel not in files:
            source = Path(gomod.download(module, required_version(go_mod, module))["Dir"])
            files[rel] = (source / path).read_text()
    return sorted(files.items())


def resolve(text: str, refs: dict[str, str], version: str) -> list[dict[str, Any]]:
    """ko resolve: ``ko://`` references to image names, ``devel`` version labels to
    ``version`` (as the release pipeline's sed does); the YAML documents."""

    def image(match: re.Match[str]) -> str:
        if match[1] not in refs:
            raise ImagesError(f"no image built for ko://{match[1]}")
        return refs[match[1]]

    text = _KO_REF.sub(image, text)
    text = text.replace(
        "app.kubernetes.io/version: devel", f'app.kubernetes.io/version: "{version}"'
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def commands_named(texts: Iterable[str]) -> tuple[str, ...]:
    """The serving commands a release's manifests name as ``ko://knative.dev/serving/cmd/X``
    (what its release pipeline builds), :data:`COMMANDS` first. A fixed list missed 1.10's
    domain-mapping controller and webhook: its serving-core could not be resolved."""
    prefix = f"{SERVING}/cmd/"
    named = {m[1].removeprefix(prefix) for t in texts for m in _KO_REF.finditer(t)}
    foreign = sorted(r for r in named if "/" in r)
    if foreign:
        raise ImagesError(
            "config/core names images this builder does not build: "
            + ", ".join(f"ko://{r}" for r in foreign)
        )
    return tuple(c for c in COMMANDS if c in named) + tuple(sorted(named - set(COMMANDS)))


def write_manifest(path: Path, docs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)


def check_served(version: str) -> str:
    """The module version of Knative ``version`` if the module proxy serves it; else an
    ImagesError naming the nearest patch it does serve, as a ``--knative-version``."""
    mod_version = module_version(version)
    if _downloaded(mod_version) or gomod.resolvable(SERVING, mod_version):
        return mod_version
    served = gomod.nearest_resolvable(SERVING, mod_version)
    hint = ""
    if served:
        minor, patch = served.removeprefix("v0.").split(".")
        hint = (
            f"; the nearest it serves is {served} (--knative-version=1.{int(minor) - 27}.{patch})"
        )
    raise ImagesError(
        f"Knative Serving {version}: the module proxy refuses {SERVING}@{mod_version}{hint}"
    )


#: the knative.dev modules serving's commands compile: their sources come with the build
COMPILED_DEPENDENCIES = ("knative.dev/pkg", "knative.dev/networking", "knative.dev/caching")


def served_patch(mod_version: str) -> tuple[str | None, str]:
    """(the serving module version a build here would use for ``mod_version``, why another
    than it): itself when the serving module and the sources it compiles are served (or in
    the Go module cache), else the newest lower patch of its minor for which they are. None
    when no patch is or the proxy cannot be asked (the build then says why). Asked before any
    build: a refused patch found after a 6-minute Kubernetes build (the 1.19.9 matrix leg)
    wastes the run, and 1.19.7's build died on its knative.dev/pkg zip (403) after the
    Kubernetes one."""
    why = ""
    try:
        major_minor, _, patch = mod_version.rpartition(".")
        for p in range(int(patch), -1, -1):
            candidate = f"{major_minor}.{p}"
            if not (_downloaded(candidate) or gomod.resolvable(SERVING, candidate)):
                why = why or f"the module proxy refuses {SERVING}@{candidate}"
                continue
            refused = refused_dependency(candidate)
            if refused is None:
                return candidate, why
            why = why or f"the module proxy refuses {refused}, which {SERVING}@{candidate} builds"
        return None, why
    except (gomod.GoBuildError, requests.RequestException, OSError, subprocess.SubprocessError):
        return None, why


def refused_dependency(mod_version: str) -> str | None:
    """The first ``module@version`` of :data:`COMPILED_DEPENDENCIES` serving ``mod_version``
    requires whose source the proxy refuses; None when all are served, or when serving's
    go.mod cannot be read (its build then says what is missing)."""
    go_mod = gomod.go_mod_of(SERVING, mod_version)
    if go_mod is None:
        return None
    for dep in COMPILED_DEPENDENCIES:
        version = gomod.required_version(go_mod, dep)
        if version is not None and not gomod.zip_available(dep, version):
            return f"{dep}@{version}"
    return None


def _downloaded(mod_version: str) -> bool:
    """Whether ``go mod download`` already has the serving module's zip (no network)."""
    return gomod.cached_download(SERVING, mod_version, "zip").is_file()


def build_serving(
    client: docker.DockerClient, version: str, progress: Progress = print
) -> ServingBuild:
    """Images for :data:`COMMANDS` and serving-crds.yaml / serving-core.yaml for ``version``."""
    started = time.monotonic()
    mod_version = check_served(version)
    info = gomod.download(SERVING, mod_version)
    module_dir = Path(info["Dir"])
    go_mod = Path(info["GoMod"]).read_text()
    files = config_files(module_dir, "config/core", LINKED_FILES, go_mod)
    commands = commands_named(text for _rel, text in files)
    bin_dir = state_dir() / "bin" / f"serving-{mod_version}-r{RECIPE}"
    if not all((bin_dir / c).is_file() for c in commands):
        progress(
            f"building Knative Serving {version} ({SERVING}@{mod_version}: "
            f"{', '.join(commands)}; about 10 min cold)"
        )
        with tempfile.TemporaryDirectory(prefix="knative-drain-serving-") as tmp:
            src = gomod.writable_copy(module_dir, Path(tmp) / "serving")
            with gomod.staged(bin_dir) as staging:
                gomod.build({f"./cmd/{c}": c for c in commands}, staging, cwd=src)
    images = {
        c: binary_image(
            client,
            image_ref(c, version),
            {f"/ko-app/{c}": bin_dir / c},
            base="scratch",
            entrypoint=[f"/ko-app/{c}"],
            user=KO_USER,
            env={"KO_DATA_PATH": "/var/run/ko"},
            kind="knative-serving",
        )
        for c in commands
    }
    refs = {f"{SERVING}/cmd/{c}": image_ref(c, version) for c in commands}
    out = state_dir() / "manifests" / f"built-{version}"
    core: list[dict[str, Any]] = []
    for _rel, text in files:
        core += resolve(text, refs, version)
    crds = [d for d in core if d.get("kind") == "CustomResourceDefinition"]
    write_manifest(out / "serving-crds.yaml", crds)
    write_manifest(out / "serving-core.yaml", core)
    return ServingBuild(version, mod_version, images, out, time.monotonic() - started)
