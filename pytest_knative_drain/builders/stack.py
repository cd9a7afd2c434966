"""Everything a kind cluster with one Knative release needs, built here: one call.

``build_kind_stack`` runs the builders in order (each cached by its inputs, so a warm
run takes seconds), times each step, and returns what the kind platform consumes:
the kind command, a node image, a manifests directory and the images to load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.docker_engine import docker_client, ensure_engine
from . import gomod, kind_cli, knative, kourier, kubernetes, node_image

Progress = Callable[[str], None]
#: Kubernetes built for the kind nodes when the caller names none; the platform picks one
#: per release (knative/kubernetes.py: ``--kubernetes-version``, else the release's default)
KUBERNETES_VERSION = "v1.31.14"


@dataclass
class KindStack:
    """What a kind platform needs to run one Knative release with no registry."""

    knative_version: str
    kind: Path
    kind_version: str
    node_image: str
    kubernetes_version: str
    manifests_dir: Path
    load_images: list[str]
    ingress: str
    notes: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    kubernetes_reason: str = ""  # why this Kubernetes (knative/kubernetes.py)

    def describe(self) -> dict[str, Any]:
        """Facts for the run's report: what was built and what was substituted."""
        return {
            "built_here": True,
            "kind_version": self.kind_version,
            "node_image": self.node_image,
            "kubernetes_version": self.kubernetes_version,
            "kubernetes_reason": self.kubernetes_reason,
            "ingress": self.ingress,
            "build_notes": self.notes,
            "build_steps_s": {k: round(v, 1) for k, v in self.steps.items()},
        }


def build_kind_stack(
    knative_version: str,
    progress: Progress = print,
    *,
    kubernetes_version: str = KUBERNETES_VERSION,
    kind_version: str = kind_cli.KIND_VERSION,
    kubernetes_reason: str = "",
) -> KindStack:
    """Build (or reuse) kind, the node image, Serving and Kourier for ``knative_version``
    on a node image of ``kubernetes_version``, run by kind ``kind_version``."""
    steps: dict[str, float] = {}
    notes: list[str] = []

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = fn()
        steps[name] = time.monotonic() - started
        progress(f"[build] {name}: {steps[name]:.1f} s")
        return result

    knative.check_served(knative_version)  # a refused release: before an hour of builds
    ensure_engine()
    client = docker_client(timeout=1800)
    try:
        kind = timed("kind", lambda: kind_cli.ensure_kind(kind_version, progress))
        k8s_build = timed(
            "kubernetes binaries", lambda: kubernetes.build_binaries(kubernetes_version, progress)
        )
        notes += [f"module substituted: {s}" for s in k8s_build.substitutions]
        source = Path(gomod.download("k8s.io/kubernetes", kubernetes_version)["Dir"])
        versions = kubernetes.kubeadm_versions(kubernetes_version, source)
        cp = timed(
            "control-plane images",
            lambda: kubernetes.ensure_control_plane_images(client, k8s_build, versions, progress),
        )
        node = timed(
            "node image",
            lambda: node_image.ensure_node_image(
                client,
                kind_version=kind_version,
                build=k8s_build,
                versions=versions,
                images={c: o.tag for c, o in cp.items()},
                progress=progress,
            ),
        )
        serving = timed(
            "knative serving", lambda: knative.build_serving(client, knative_version, progress)
        )
        ingress = timed(
            "kourier",
            lambda: kourier.build_kourier(client, knative_version, kubernetes_version, progress),
        )
    finally:
        client.close()
    (serving.manifests_dir / "kourier.yaml").write_text(ingress.manifest.read_text())
    ingress_name = f"kourier {ingress.version} (envoy {ingress.envoy_version})"
    if not ingress.version.startswith(".".join(knative_version.split(".")[:2]) + "."):
        notes.append(
            f"ingress: kourier {ingress.version} (serving {knative_version}): the "
            "only net-kourier version the module proxy serves here"
        )
    notes += [
        f"fetched without checksum-database lookup: {m} ({why})"
        for m, why in gomod.UNVERIFIED.items()
    ]
    images = [o.tag for o in serving.images.values()]
    images += [ingress.controller.tag, ingress.gateway.tag]
    return KindStack(
        knative_version=knative_version,
        kind=kind,
        kind_version=kind_version,
        node_image=node.tag,
        kubernetes_version=kubernetes_version,
        manifests_dir=serving.manifests_dir,
        load_images=images,
        ingress=f"{ingress_name} (serving {knative_version})",
        notes=notes,
        steps=steps,
        kubernetes_reason=kubernetes_reason,
    )
