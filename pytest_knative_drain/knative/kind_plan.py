"""The kind platform's install plan for one Knative release, as data (nothing runs here).

``knative-drain plan`` prints it and the kind platform executes it, so what a user
reviews is exactly what will run. The steps follow Knative's own kind installer,
kn-plugin-quickstart (``pkg/kind/kind.go`` and ``pkg/install/install.go``, read at
main 2026-06-16 and at its release tags), with three deliberate differences:

* the NodePort is published on 127.0.0.1 only (quickstart listens on 0.0.0.0);
* the node image is pinned by digest with the kind release that built it (see ``catalog``);
* every ``kubectl`` call names the context ``kind-<cluster>`` instead of trusting the
  current one, so a plan can never touch another cluster.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .catalog import Release

#: Kourier's gateway NodePort inside the cluster (quickstart ``KourierKind``: nodePort 31080).
NODE_PORT = 31080
#: Ingress class Serving must use for Kourier (net-kourier's ``kourier.ingress.networking...``).
KOURIER_INGRESS_CLASS = "kourier.ingress.networking.knative.dev"
#: Magic DNS domain resolving to 127.0.0.1 (quickstart ``KourierKind`` config-domain patch).
DOMAIN = "127.0.0.1.sslip.io"
#: Registries Serving does not resolve tags for (config-deployment
#: ``registries-skipping-tag-resolving`` default in knative/serving pkg/deployment/config.go,
#: same in 1.10 through 1.23). Images loaded with ``kind load`` exist in no registry, so
#: any other name makes the revision fail with "failed to resolve image to digest".
LOCAL_REGISTRIES = ("kind.local", "ko.local", "dev.local")
MANIFESTS = ("serving-crds.yaml", "serving-core.yaml", "kourier.yaml")
#: 10 minutes, as quickstart's ``waitForPodsReady``.
PODS_READY_TIMEOUT_S = 600
#: quickstart waits for CRDs with kubectl's default; 2 minutes leaves room on a busy host.
CRDS_TIMEOUT_S = 120
#: quickstart ``createNewCluster`` uses ``--wait=120s``.
CLUSTER_WAIT_S = 120
#: quickstart ``waitForWebhookReady``: 12 tries, 10 s apart.
WEBHOOK_TRIES, WEBHOOK_INTERVAL_S = 12, 10
#: quickstart ``retryingApply``: 3 tries, 10 s apart (remote manifests, webhook warm-up).
APPLY_TRIES, APPLY_INTERVAL_S = 3, 10
MAX_WORKERS = 4  # each kind node is a full kubelet+containerd container; a 2-core host fits few

# kind's cluster-name rule (kind pkg/internal/apis/config/validate.go ``validNameRE``).
_CLUSTER_NAME_RE = re.compile(r"^[a-z0-9.-]+$")


class KindPlanError(ValueError):
    """Bad plan input (message names the option and the accepted values)."""


@dataclass(frozen=True)
class Step:
    """One step of the plan. ``detail["commands"]`` lists what to run, in order.

    Each command is ``{"argv": [...], "stdin": str | None, "timeout_s": float,
    "retries": int, "interval_s": float}``; ``retries`` > 1 marks infrastructure calls
    the executor may retry (tenacity), never a measured request.
    """

    name: str
    description: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for reports and ``plan --json``."""
        return {"name": self.name, "description": self.description, "detail": self.detail}


def _cmd(
    argv: list[str],
    *,
    stdin: str | None = None,
    timeout_s: float = 60,
    retries: int = 1,
    interval_s: float = 0,
) -> dict[str, Any]:
    return {
        "argv": argv,
        "stdin": stdin,
        "timeout_s": timeout_s,
        "retries": retries,
        "interval_s": interval_s,
    }


def _check_cluster_name(cluster_name: str) -> None:
    if not isinstance(cluster_name, str) or not _CLUSTER_NAME_RE.match(cluster_name):
        raise KindPlanError(
            f"cluster_name={cluster_name!r}: kind accepts lowercase letters, digits, '.' and '-'"
        )


def _check_port_workers(host_port: int, workers: int) -> None:
    if isinstance(host_port, bool) or not isinstance(host_port, int) or not 1 <= host_port <= 65535:
        raise KindPlanError(f"host_port={host_port!r}: accepted values are whole numbers 1-65535")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS:
        raise KindPlanError(
            f"workers={workers!r}: accepted values are 0-{MAX_WORKERS} "
            "(0 = the control-plane node runs everything)"
        )


def render_kind_config(
    release: Release,
    *,
    host_port: int,
    workers: int,
    node_image: str | None = None,
    default_cni: bool = True,
) -> dict[str, Any]:
    """The kind ``Cluster`` config (kind.x-k8s.io/v1alpha4) for ``release`` as data.

    Field names are kind's v1alpha4 API (kind pkg/apis/config/v1alpha4/types.go:
    ``nodes[].role/image/extraPortMappings``, ``containerPort/hostPort/listenAddress/
    protocol``, ``networking.apiServerAddress``). The port mapping is quickstart's
    (pkg/kind/kind.go ``createNewCluster``: containerPort 31080 on the control-plane node)
    but bound to 127.0.0.1. With workers the NodePort still answers on the control-plane
    node because kube-proxy forwards it from every node. ``node_image`` replaces the
    release's (a node image built here); ``default_cni=False`` sets kind's
    ``networking.disableDefaultCNI`` (such a node image has no kindnetd).
    """
    _check_port_workers(host_port, workers)
    image = node_image or release.kind_node_image
    control_plane: dict[str, Any] = {
        "role": "control-plane",
        "image": image,
        "extraPortMappings": [
            {
                "containerPort": NODE_PORT,
                "hostPort": host_port,
                "listenAddress": "127.0.0.1",
                "protocol": "TCP",
            }
        ],
    }
    nodes = [control_plane] + [{"role": "worker", "image": image} for _ in range(workers)]
    networking: dict[str, Any] = {"apiServerAddress": "127.0.0.1"}
    if not default_cni:
        networking["disableDefaultCNI"] = True
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": networking,
        "nodes": nodes,
    }


def kourier_nodeport_service() -> dict[str, Any]:
    """NodePort Service in front of the Kourier gateway (quickstart install.go ``KourierKind``).

    Selector and ports match net-kourier's own ``kourier`` Service (config/300-gateway.yaml,
    identical from knative-v1.10.3 to knative-v1.23.0: app 3scale-kourier-gateway, http2
    80 -> 8080). A separate Service leaves the shipped LoadBalancer Service untouched.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kourier-ingress",
            "namespace": "kourier-system",
            "labels": {"networking.knative.dev/ingress-provider": "kourier"},
        },
        "spec": {
            "type": "NodePort",
            "selector": {"app": "3scale-kourier-gateway"},
            "ports": [{"name": "http2", "nodePort": NODE_PORT, "port": 80, "targetPort": 8080}],
        },
    }


def _manifest_sources(release: Release, manifests_dir: str | Path | None) -> dict[str, str]:
    if manifests_dir is None:
        return release.manifest_urls()
    directory = Path(manifests_dir)
    if not directory.is_dir():
        raise KindPlanError(
            f"manifests_dir={str(manifests_dir)!r}: not a directory; it must hold "
            f"{', '.join(MANIFESTS)} for Knative {release.version}"
        )
    missing = [name for name in MANIFESTS if not (directory / name).is_file()]
    if missing:
        raise KindPlanError(
            f"manifests_dir={str(manifests_dir)!r}: missing {', '.join(missing)}; "
            f"expected {', '.join(MANIFESTS)} (from {release.serving_core_url.rsplit('/', 1)[0]} "
            f"and {release.kourier_url.rsplit('/', 1)[0]})"
        )
    return {name: str((directory / name).resolve()) for name in MANIFESTS}


def _check_images(images: tuple[str, ...]) -> None:
    for image in images:
        registry = image.split("/", 1)[0] if "/" in image else ""
        if registry not in LOCAL_REGISTRIES:
            raise KindPlanError(
                f"app image {image!r}: name it under one of {', '.join(LOCAL_REGISTRIES)} "
                f"(e.g. dev.local/{image.rsplit('/', 1)[-1]}); Knative resolves tags of any "
                "other registry to digests and kind-loaded images are in no registry"
            )


def kind_steps(
    release: Release,
    *,
    cluster_name: str = "knative-drain",
    host_port: int = 31080,
    workers: int = 0,
    manifests_dir: str | Path | None = None,
    app_images: tuple[str, ...] | list[str] = (),
) -> list[Step]:
    """Every step the kind platform takes to install ``release``, in order, as data.

    Manifests come from the release URLs, or from ``manifests_dir`` (files named as in
    the release: serving-crds.yaml, serving-core.yaml, kourier.yaml) for offline hosts.
    """
    _check_cluster_name(cluster_name)
    _check_port_workers(host_port, workers)
    images = tuple(app_images)
    _check_images(images)
    sources = _manifest_sources(release, manifests_dir)
    ctx = f"kind-{cluster_name}"
    kubectl = ["kubectl", "--context", ctx]
    config = render_kind_config(release, host_port=host_port, workers=workers)
    config_yaml = yaml.safe_dump(config, sort_keys=False)

    def apply(source: str) -> dict[str, Any]:
        # Downloads and a just-started webhook fail transiently; quickstart retries 3x10s.
        return _cmd(
            [*kubectl, "apply", "-f", source],
            timeout_s=120,
            retries=APPLY_TRIES,
            interval_s=APPLY_INTERVAL_S,
        )

    def pods_ready(namespace: str) -> list[dict[str, Any]]:
        # Deployments exist as soon as apply returns, so waiting on them first avoids
        # kubectl wait's instant "no matching resources found" on not-yet-created pods.
        # "!job-name" (quickstart) skips Job pods, which complete instead of going Ready.
        wait = [*kubectl, "wait", "-n", namespace, f"--timeout={PODS_READY_TIMEOUT_S}s"]
        return [
            _cmd(
                [*wait, "deployment", "--all", "--for=condition=Available"],
                timeout_s=PODS_READY_TIMEOUT_S + 30,
            ),
            _cmd(
                [*wait, "pod", "-l", "!job-name", "--for=condition=Ready"],
                timeout_s=PODS_READY_TIMEOUT_S + 30,
            ),
        ]

    def patch_cm(name: str, data: dict[str, str]) -> dict[str, Any]:
        return _cmd(
            [*kubectl, "patch", "configmap", name, "-n", "knative-serving",
             "--type", "merge", "-p", json.dumps({"data": data})],
            retries=APPLY_TRIES,
            interval_s=APPLY_INTERVAL_S,
        )  # fmt: skip

    service_yaml = yaml.safe_dump(kourier_nodeport_service(), sort_keys=False)
    steps = [
        Step(
            "preflight",
            f"docker daemon answers; kind >= {release.min_kind_version}; kubectl present",
            {
                "commands": [
                    _cmd(["docker", "info", "--format", "{{.ServerVersion}}"]),
                    _cmd(["kind", "version"]),
                    _cmd(["kubectl", "version", "--client", "--output=json"]),
                ],
                "min_kind_version": release.min_kind_version,
                "why": "kind supports a node image only with the kind release that built it "
                "(kind release notes: use the @sha256 digest listed for your release)",
            },
        ),
        Step(
            "create-cluster",
            f"kind cluster {cluster_name!r} on {release.kind_node_image.split('@')[0]} "
            f"({1 + workers} node(s)); NodePort {NODE_PORT} -> 127.0.0.1:{host_port}",
            {
                "commands": [
                    _cmd(
                        [
                            "kind",
                            "create",
                            "cluster",
                            "--name",
                            cluster_name,
                            f"--wait={CLUSTER_WAIT_S}s",
                            "--config=-",
                        ],
                        stdin=config_yaml,
                        timeout_s=CLUSTER_WAIT_S + 300,
                    )  # fmt: skip
                ],
                "cluster_name": cluster_name,
                "context": ctx,
                "node_image": release.kind_node_image,
                "host_port": host_port,
                "kind_config": config,
                "kind_config_yaml": config_yaml,
            },
        ),
        Step(
            "serving-crds",
            f"apply serving-crds.yaml ({release.tag}); wait until every CRD is Established",
            {
                "commands": [
                    apply(sources["serving-crds.yaml"]),
                    _cmd(
                        [
                            *kubectl,
                            "wait",
                            "--for=condition=Established",
                            "--all",
                            "crd",
                            f"--timeout={CRDS_TIMEOUT_S}s",
                        ],
                        timeout_s=CRDS_TIMEOUT_S + 30,
                    ),  # fmt: skip
                ],
                "source": sources["serving-crds.yaml"],
            },
        ),
        Step(
            "serving-core",
            f"apply serving-core.yaml ({release.tag}); wait for knative-serving pods Ready "
            f"({PODS_READY_TIMEOUT_S // 60} min)",
            {
                "commands": [apply(sources["serving-core.yaml"]), *pods_ready("knative-serving")],
                "source": sources["serving-core.yaml"],
            },
        ),
        Step(
            "serving-webhook",
            "wait until the webhook Service has a ready endpoint (it validates the "
            "ConfigMap patches below)",
            {
                "commands": [
                    _cmd(
                        [
                            *kubectl,
                            "get",
                            "endpointslice",
                            "-n",
                            "knative-serving",
                            "-l",
                            "kubernetes.io/service-name=webhook",
                            "-o",
                            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)]}",
                        ],
                        retries=WEBHOOK_TRIES,
                        interval_s=WEBHOOK_INTERVAL_S,
                    )  # fmt: skip
                ],
                "until": "non-empty output",
            },
        ),
        Step(
            "kourier",
            f"apply kourier.yaml ({release.kourier_tag}); wait for kourier-system pods Ready, "
            "then knative-serving again (net-kourier-controller runs there)",
            {
                "commands": [
                    apply(sources["kourier.yaml"]),
                    *pods_ready("kourier-system"),
                    *pods_ready("knative-serving"),
                ],
                "source": sources["kourier.yaml"],
            },
        ),
        Step(
            "ingress-class",
            f"config-network ingress-class = {KOURIER_INGRESS_CLASS}",
            {
                "commands": [patch_cm("config-network", {"ingress-class": KOURIER_INGRESS_CLASS})],
                # knative/networking pkg/config/config.go reads the legacy "ingress.class"
                # (quickstart's key) first and lets "ingress-class" override it.
                "key": "ingress-class",
            },
        ),
        Step(
            "kourier-nodeport",
            f"Service kourier-system/kourier-ingress: NodePort {NODE_PORT} -> gateway 8080",
            {
                "commands": [_cmd([*kubectl, "apply", "-f", "-"], stdin=service_yaml)],
                "service": kourier_nodeport_service(),
            },
        ),
        Step(
            "config-domain",
            f"config-domain: {DOMAIN} (route hosts resolve to 127.0.0.1; clients may also "
            "send a Host header)",
            {"commands": [patch_cm("config-domain", {DOMAIN: ""})], "domain": DOMAIN},
        ),
        Step(
            "load-images",
            f"kind load docker-image: {', '.join(images)}" if images else "no app images given",
            {
                "commands": [
                    _cmd(
                        ["kind", "load", "docker-image", image, "--name", cluster_name],
                        timeout_s=300,
                    )
                    for image in images
                ],
                "images": list(images),
                "registries_skipping_tag_resolving": list(LOCAL_REGISTRIES),
            },
        ),
    ]
    return steps


def format_plan(release: Release, steps: list[Step]) -> str:
    """Human-readable plan for ``knative-drain plan``: release facts, then numbered commands."""
    lines = [
        f"Knative Serving {release.version} ({release.tag}, knative.dev/serving "
        f"{release.go_module_version}, released {release.released or 'unknown'})",
        f"  Kourier {release.kourier_version}; Kubernetes >= {release.min_kubernetes}; "
        f"node image {release.kind_node_image}",
        f"  kind >= {release.min_kind_version}: {release.node_image_reason}",
        "",
    ]
    for number, step in enumerate(steps, 1):
        lines.append(f"{number:2d}. {step.name}: {step.description}")
        for command in step.detail.get("commands", []):
            extra = f"  (up to {command['retries']} tries)" if command["retries"] > 1 else ""
            stdin = "  (stdin:)" if command["stdin"] else ""
            lines.append(f"      $ {shlex.join(command['argv'])}{stdin}{extra}")
            if command["stdin"]:
                lines.extend(f"        {line}" for line in command["stdin"].splitlines())
    return "\n".join(lines)
