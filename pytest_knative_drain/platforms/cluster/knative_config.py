"""Put a cluster into a scenario's Knative configuration, and back afterwards.

Three kinds of change, each undone in reverse order on exit (also on failure):
ConfigMaps in knative-serving (config-defaults, config-autoscaler ...), the activator's
``terminationGracePeriodSeconds`` (a pod template change: the activator rolls, and we
wait until it has), and the activator HPA's ``minReplicas`` when a trigger needs a
second activator to take over. Nothing is patched that already has the wanted value.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from ...matrix.configs import KnativeConfig
from ...matrix.scenarios import Scenario
from .api import (
    FIELD_MANAGER,
    SERVING_NAMESPACE,
    ClusterError,
    Progress,
    through_webhook,
    wait_until,
)
from .changes import ConfigMapPatch

ACTIVATOR = "activator"  # Deployment and HorizontalPodAutoscaler name (config/core/deployments)
ROLL_TIMEOUT_S = 600.0


def _quiet(_: str) -> None:
    pass


def planned_changes(
    config_maps: dict[str, dict[str, str]],
    activator_grace_s: int | None,
    activator_replicas: int,
    activator_exact: int | None = None,
) -> list[str]:
    """What would change, for messages ("refused: ...") and the report."""
    changes = [
        f"ConfigMap {SERVING_NAMESPACE}/{name} {key}={value}"
        for name, data in sorted(config_maps.items())
        for key, value in sorted(data.items())
    ]
    if activator_grace_s is not None:
        changes.append(f"activator terminationGracePeriodSeconds={activator_grace_s}")
    if activator_replicas:
        changes.append(f"activator HPA minReplicas>={activator_replicas}")
    if activator_exact is not None:
        changes.append(f"activator HPA minReplicas=maxReplicas={activator_exact}")
    return changes


class KnativeConfigPatch:
    """A context manager applying a scenario's cluster-wide Knative configuration."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        config_maps: dict[str, dict[str, str]] | None = None,
        activator_grace_s: int | None = None,
        activator_replicas: int = 0,
        activator_exact: int | None = None,
        roll_timeout_s: float = ROLL_TIMEOUT_S,
        progress: Progress = _quiet,
    ) -> None:
        self.api = api
        self.apps = k8s.AppsV1Api(api)
        self.autoscaling = k8s.AutoscalingV2Api(api)
        self.config_maps = dict(config_maps or {})
        self.activator_grace_s = activator_grace_s
        self.activator_replicas = activator_replicas
        self.activator_exact = activator_exact
        self.roll_timeout_s = roll_timeout_s
        self.progress = progress
        self._undo: list[tuple[str, Any]] = []

    @property
    def changes(self) -> list[str]:
        return planned_changes(
            self.config_maps, self.activator_grace_s, self.activator_replicas, self.activator_exact
        )

    def __enter__(self) -> KnativeConfigPatch:
        try:
            self.apply()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def apply(self) -> None:
        for name, data in self.config_maps.items():
            patch = ConfigMapPatch(self.api, name, data, progress=self.progress)
            patch.apply()
            self._undo.append(("configmap", patch))
        if self.activator_replicas:
            self._raise_activator_replicas(self.activator_replicas)
        if self.activator_exact is not None:
            self._pin_activator_replicas(self.activator_exact)
        if self.activator_grace_s is not None:
            self._set_activator_grace(self.activator_grace_s)

    def restore(self) -> None:
        """Undo every change made, newest first; report what could not be undone."""
        failures = []
        while self._undo:
            kind, what = self._undo.pop()
            try:
                if kind == "configmap":
                    what.restore()
                elif kind == "grace":
                    self._patch_grace(what)
                    self._wait_rolled()
                elif kind == "hpa":
                    self._patch_hpa(what)
            except (ClusterError, ApiException) as exc:
                failures.append(f"{kind}: {exc}")
        if failures:
            raise ClusterError(
                "could not restore the Knative configuration: " + "; ".join(failures)
            )

    # -- the activator -----------------------------------------------------------------
    def _read_activator(self) -> k8s.V1Deployment:
        try:
            return self.apps.read_namespaced_deployment(ACTIVATOR, SERVING_NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"Deployment {SERVING_NAMESPACE}/{ACTIVATOR} not found (is Knative installed?)"
                ) from None
            raise

    def _patch_grace(self, grace: int | None) -> None:
        body = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": grace}}}}
        self.apps.patch_namespaced_deployment(
            ACTIVATOR, SERVING_NAMESPACE, body, field_manager=FIELD_MANAGER
        )

    def _set_activator_grace(self, grace: int) -> None:
        current = self._read_activator().spec.template.spec.termination_grace_period_seconds
        if current == grace:
            return
        self.progress(f"activator terminationGracePeriodSeconds {current} -> {grace} (rolls it)")
        self._patch_grace(grace)
        self._undo.append(("grace", current))
        self._wait_rolled()

    def _wait_rolled(self) -> None:
        """Until the activator Deployment's new pods are all updated and available."""

        def check() -> str | None:
            dep = self._read_activator()
            status = dep.status or k8s.V1DeploymentStatus()
            want = dep.spec.replicas if dep.spec.replicas is not None else 1
            if (status.observed_generation or 0) < (dep.metadata.generation or 0):
                return "the Deployment controller has not seen the change yet"
            updated = status.updated_replicas or 0
            available = status.available_replicas or 0
            total = status.replicas or 0
            if updated < want or available < want or total > updated:
                return f"{updated}/{want} updated, {available} available, {total} total"
            return None

        wait_until(
            check,
            f"activator rollout in {SERVING_NAMESPACE}",
            timeout_s=self.roll_timeout_s,
            progress=self.progress,
        )

    def _patch_hpa(self, spec: dict[str, int]) -> None:
        through_webhook(
            lambda: self.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                ACTIVATOR, SERVING_NAMESPACE, {"spec": spec}, field_manager=FIELD_MANAGER
            ),
            f"patch HorizontalPodAutoscaler {SERVING_NAMESPACE}/{ACTIVATOR}",
        )

    def _read_hpa(self) -> k8s.V2HorizontalPodAutoscaler | None:
        """The activator's HPA, or None where the install has none (operator-managed)."""
        try:
            return self.autoscaling.read_namespaced_horizontal_pod_autoscaler(
                ACTIVATOR, SERVING_NAMESPACE
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _pin_activator_replicas(self, replicas: int) -> None:
        """HPA minReplicas = maxReplicas = ``replicas``; wait until exactly that many run."""
        hpa = self._read_hpa()
        if hpa is None:
            raise ClusterError(
                f"HorizontalPodAutoscaler {SERVING_NAMESPACE}/{ACTIVATOR} not found: "
                "scale the activator by hand for this scenario"
            )
        old = {"minReplicas": hpa.spec.min_replicas or 1, "maxReplicas": hpa.spec.max_replicas}
        self.progress(f"activator HPA min/max {old} -> {replicas}")
        self._patch_hpa({"minReplicas": replicas, "maxReplicas": replicas})
        self._undo.append(("hpa", old))

        def check() -> str | None:
            dep = self._read_activator()
            status = dep.status or k8s.V1DeploymentStatus()
            available, total = status.available_replicas or 0, status.replicas or 0
            if available == total == replicas:
                return None
            return f"{available} available, {total} total, want {replicas}"

        wait_until(
            check,
            f"exactly {replicas} activator pod(s)",
            timeout_s=self.roll_timeout_s,
            progress=self.progress,
        )

    def _raise_activator_replicas(self, replicas: int) -> None:
        hpa = self._read_hpa()
        if hpa is None:  # no HPA (operator-managed installs may have none): scale directly
            dep = self._read_activator()
            if (dep.spec.replicas or 1) < replicas:
                raise ClusterError(
                    f"the activator has {dep.spec.replicas} replica(s) and no HPA "
                    f"{SERVING_NAMESPACE}/{ACTIVATOR}; scale it to >= {replicas} first"
                )
        elif (hpa.spec.min_replicas or 1) < replicas:
            self.progress(f"activator HPA minReplicas {hpa.spec.min_replicas} -> {replicas}")
            self._patch_hpa({"minReplicas": replicas})
            self._undo.append(("hpa", {"minReplicas": hpa.spec.min_replicas or 1}))

        def check() -> str | None:
            dep = self._read_activator()
            available = (dep.status.available_replicas if dep.status else 0) or 0
            return None if available >= replicas else f"{available}/{replicas} available"

        wait_until(
            check,
            f">= {replicas} activator pods available",
            timeout_s=self.roll_timeout_s,
            progress=self.progress,
        )


def patch_for(
    api: k8s.ApiClient,
    config: KnativeConfig,
    scenario: Scenario,
    *,
    progress: Progress = _quiet,
) -> KnativeConfigPatch:
    """The patch ``scenario`` under ``config`` needs (possibly empty: nothing to change).

    The activator replica floor counts as a change only if fewer activators run now.
    """
    replicas = 0
    if scenario.activator_replicas and config.activator_replicas is None:
        dep = k8s.AppsV1Api(api).read_namespaced_deployment(ACTIVATOR, SERVING_NAMESPACE)
        have = (dep.status.available_replicas if dep.status else 0) or 0
        replicas = scenario.activator_replicas if have < scenario.activator_replicas else 0
    return KnativeConfigPatch(
        api,
        config_maps=config.config_maps,
        activator_grace_s=config.activator_grace_s,
        activator_replicas=replicas,
        activator_exact=config.activator_replicas,
        progress=progress,
    )
