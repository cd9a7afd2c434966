"""Knative configurations a scenario runs under, and their broken-config twins, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

from .apps import PASS
from .scenarios import ALL_PLATFORMS, CLUSTER, Scenario, ScenarioPlan


@dataclass(frozen=True)
class KnativeConfig:
    """Knative configuration a scenario runs under; restored afterwards on a cluster.

    A config with ``expect`` is a broken-config twin: it runs only with apps that drain
    cleanly, and one of its catch kinds must show up, or the gate cannot fail there.
    """

    name: str
    summary: str
    platforms: tuple[str, ...] = ALL_PLATFORMS
    scenarios: tuple[str, ...] = ()  # the scenarios it applies to; empty: all
    timeout_fraction: float | None = None  # timeoutSeconds = this x the longest request
    target_burst_capacity: int | None = None  # ksvc annotation, overrides the scenario's
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # knative-serving
    activator_grace_s: int | None = None  # activator terminationGracePeriodSeconds
    activator_replicas: int | None = None  # exactly this many activators (HPA min = max)
    scale: int | None = None  # revision pods, instead of the scenario's
    # revision spec responseStartTimeoutSeconds / idleTimeoutSeconds (Knative 1.7+); on
    # local queue-proxy's REVISION_RESPONSE_START_TIMEOUT_SECONDS / _IDLE_TIMEOUT_SECONDS
    response_start_timeout_s: int | None = None
    idle_timeout_s: int | None = None
    expect: frozenset[str] = PASS

    def applies_to(self, scenario: Scenario) -> bool:
        return not self.scenarios or scenario.name in self.scenarios

    def changes_cluster(self) -> bool:
        """True when it patches cluster-wide objects (ConfigMaps, the activator)."""
        return (
            bool(self.config_maps)
            or self.activator_grace_s is not None
            or self.activator_replicas is not None
        )

    def timeout_seconds(self, plan: ScenarioPlan) -> int:
        """The revision's timeoutSeconds under this config."""
        if self.timeout_fraction is None:
            return plan.timeout_seconds
        longest = max(b.sleep_s for b in plan.batches)
        return max(1, int(longest * self.timeout_fraction))


DEFAULT_CONFIG = "default"
CONFIGS: dict[str, KnativeConfig] = {
    c.name: c
    for c in (
        KnativeConfig(DEFAULT_CONFIG, "the release's defaults; nothing changed"),
        KnativeConfig(
            "short-timeout",
            "timeoutSeconds at 60 % of the request length (knative/serving#15211 cause: "
            "timeoutSeconds shorter than the request)",
            scenarios=("pod-delete-long", "grpc-unary-long"),
            timeout_fraction=0.6,
            # whichever proxy in the path times out first: queue-proxy's 504 "request
            # timeout", or the activator's 504 "activator request timeout" when it is in
            # the path (on kind: one pod and the default target-burst-capacity 200)
            expect=frozenset({"queue-proxy", "activator", "sigkill"}),
        ),
        KnativeConfig(
            "response-start-timeout",
            "responseStartTimeoutSeconds 10: after the first byte of a stream (at once), before "
            "its end (75 s); timeoutSeconds 120 above the whole stream. Knative times only the "
            "first byte, so a drain-clean app must pass",
            scenarios=("streaming-long",),
            response_start_timeout_s=10,
        ),
        KnativeConfig(
            "idle-timeout",
            "idleTimeoutSeconds 10, above the 1 s between a stream's lines: a drain-clean app "
            "streaming through its SIGTERM must pass",
            scenarios=("streaming-long",),
            idle_timeout_s=10,
        ),
        KnativeConfig(
            "activator-in-path",
            "target-burst-capacity -1: every request passes the activator while the pod terminates",
            platforms=CLUSTER,
            # and the long-lived connections: does the activator carry them across a drain?
            scenarios=(
                "pod-delete-long",
                "second-batch-during-termination",
                "streaming-long",
                "websocket-long",
                "grpc-stream-long",
            ),
            target_burst_capacity=-1,
        ),
        KnativeConfig(
            "activator-short-grace",
            "activator terminationGracePeriodSeconds 60 below max-revision-timeout-seconds "
            "600 (knative/serving#15211 cause): the activator is killed with requests in flight",
            platforms=CLUSTER,
            scenarios=(
                "activator-delete-long",
                "activator-delete-streaming",
                "activator-delete-websocket",
                "activator-delete-grpc-stream",
            ),
            config_maps={
                "config-defaults": {
                    "max-revision-timeout-seconds": "600",
                    "revision-timeout-seconds": "300",
                }
            },
            activator_grace_s=60,
            expect=frozenset({"activator", "ingress", "unknown"}),
        ),
        KnativeConfig(
            "single-replica",
            "one revision pod (min/max-scale 1): every request in flight on it is cut; on "
            "Knative the activator buffers new ones until a replacement is Ready, so the "
            "catch is the cut requests (twice as many as with two pods on kind, 2026-12-01)",
            platforms=CLUSTER,
            scenarios=("pod-kill",),
            scale=1,
            expect=frozenset({"ingress", "activator", "queue-proxy", "unknown"}),
        ),
        KnativeConfig(
            "single-activator",
            "one activator pod (the HPA's default minReplicas 1): every request it proxies "
            "is cut; the ServerlessService then serves the pods directly until a new one is "
            "Ready, so the catch is the cut requests (twice as many as with two on kind)",
            platforms=CLUSTER,
            scenarios=("activator-kill",),
            activator_replicas=1,
            expect=frozenset({"activator", "ingress", "unknown"}),
        ),
        KnativeConfig(
            "internal-tls",
            "Knative's system-internal TLS on the data path: queue-proxy has the namespace's "
            "certificate at /var/lib/knative/certs and the requests reach it over TLS on "
            "8112, as the activator sends them (knative/internal_tls.py); draining must not depend "
            "on it. Local only: on a cluster it needs cert-manager (skipped with the reason)",
            scenarios=(
                "pod-delete-short",
                "pod-delete-long",
                "second-batch-during-termination",
                "deletion-timeliness",
            ),
        ),
    )
}
