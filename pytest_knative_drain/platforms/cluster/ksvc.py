"""The Knative Service of a case: what a scenario and app ask of the revision, rendered
as the ``serving.knative.dev/v1`` object the cluster runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api import (
    DNS_LABEL,
    FIELD_MANAGER,
    ClusterError,
)

#: the container port names Knative reads a protocol from (serving's
#: pkg/apis/serving/k8s_validation.go: "" or http1 is HTTP/1.1, h2c is cleartext HTTP/2)
PORT_NAMES = ("http1", "h2c")
#: the fixture apps' liveness endpoint, and the request that makes it fail from then on
#: (fixtures/apps/README.md): kubelet then restarts the user container (container-restart)
LIVENESS_PATH = "/healthz"
FAIL_LIVENESS_PATH = "/fail-liveness"
#: kubelet's probe of it: every second, one failure restarts the container
LIVENESS_PROBE = {
    "httpGet": {"path": LIVENESS_PATH},
    "periodSeconds": 1,
    "failureThreshold": 1,
    "timeoutSeconds": 1,
}


# -- Knative Service rendering ---------------------------------------------------------------
@dataclass(frozen=True)
class KsvcSpec:
    """The knobs a scenario sets on its Knative Service (serving.knative.dev/v1)."""

    name: str
    image: str
    timeout_seconds: int = 300
    container_concurrency: int = 0
    min_scale: int = 1
    max_scale: int = 1  # 0 = no upper bound
    target_burst_capacity: int | None = None  # -1: activator always in path; 0: only from zero
    port: int = 8080
    port_name: str = "http1"  # Knative's protocol by port name: "http1", or "h2c" (gRPC)
    env: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # more revision annotations
    # revision spec fields (Knative 1.7+); None: the cluster's defaults
    response_start_timeout_seconds: int | None = None
    idle_timeout_seconds: int | None = None
    liveness_probe: bool = False  # LIVENESS_PROBE on the user container

    def check(self) -> None:
        """Raise ClusterError naming the field and its accepted values."""
        problems = []
        if not DNS_LABEL.match(self.name) or len(self.name) > 63:
            problems.append(f"name={self.name!r}: lowercase letters, digits, '-'; <= 63 chars")
        if not self.image:
            problems.append("image: required")
        for key, low in (
            ("timeout_seconds", 1),
            ("container_concurrency", 0),
            ("min_scale", 0),
            ("max_scale", 0),
            ("port", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{key}={value!r}: a whole number >= {low}")
        for key in ("response_start_timeout_seconds", "idle_timeout_seconds"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                problems.append(f"{key}={value!r}: None or a whole number >= 0")
        if self.port_name not in PORT_NAMES:
            problems.append(f"port_name={self.port_name!r}: one of {', '.join(PORT_NAMES)}")
        if not problems and self.max_scale and self.max_scale < self.min_scale:
            problems.append(f"max_scale={self.max_scale}: >= min_scale ({self.min_scale}) or 0")
        tbc = self.target_burst_capacity
        if tbc is not None and (isinstance(tbc, bool) or not isinstance(tbc, int) or tbc < -1):
            problems.append(f"target_burst_capacity={tbc!r}: -1, 0 or a positive whole number")
        if problems:
            raise ClusterError("Knative Service: " + "; ".join(problems))


def service_name(app: str) -> str:
    """A DNS-label Knative Service name for an app name ("custom", "go-exit", ...)."""
    name = "".join(c if c.isalnum() else "-" for c in app.lower()).strip("-")[:40]
    return f"drain-{name or 'app'}"


def render_ksvc(spec: KsvcSpec, namespace: str) -> dict[str, Any]:
    """The Knative Service object for ``spec`` (annotations per knative.dev/docs autoscaling)."""
    spec.check()
    annotations = {
        "autoscaling.knative.dev/min-scale": str(spec.min_scale),
        "autoscaling.knative.dev/max-scale": str(spec.max_scale),
    }
    if spec.target_burst_capacity is not None:
        annotations["autoscaling.knative.dev/target-burst-capacity"] = str(
            spec.target_burst_capacity
        )
    annotations.update(spec.annotations)
    container: dict[str, Any] = {
        "name": "user-container",
        "image": spec.image,
        "ports": [{"containerPort": spec.port, "name": spec.port_name}],
    }
    if spec.liveness_probe:
        container["livenessProbe"] = LIVENESS_PROBE
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    revision: dict[str, Any] = {
        "timeoutSeconds": spec.timeout_seconds,
        "containerConcurrency": spec.container_concurrency,
    }
    # Explicit even when no config sets it: Knative defaults it to 300 s (config-defaults;
    # from 1.13 to the revision timeout default), which would answer 504 to a request that
    # sleeps 300 s before its first byte (the seed profile) under timeoutSeconds 600.
    revision["responseStartTimeoutSeconds"] = (
        spec.timeout_seconds
        if spec.response_start_timeout_seconds is None
        else spec.response_start_timeout_seconds
    )
    if spec.idle_timeout_seconds is not None:
        revision["idleTimeoutSeconds"] = spec.idle_timeout_seconds
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {**revision, "containers": [container]},
            }
        },
    }
