"""The cluster triggers: the API calls that end a pod's life in each trigger family.

Each is what an operator or a controller does, through the official client:
scale-down sets ``min-scale``/``max-scale`` on the revision's PodAutoscaler (the
autoscaler reads the PA's annotations). Before 1.21 the revision reconciler rewrites only
the PA's spec, so that is all; the Revision is left alone on purpose: its annotations are
copied into the Deployment's pod template (resources/deploy.go), so patching them rolls
every pod of the revision (seen on kind with 1.14.2, 2026-12-01: both pods replaced, not
one scaled away). From 1.21 the reconciler copies the Revision's ``autoscaling.knative.dev/*``
annotations onto the PA (serving #16186) and undoes a PA-only patch: there the Revision is
patched too, and the report's pod timeline shows which pods ended (not run here). Rollout changes
the Service template, activator triggers delete an activator pod, node drain cordons
the node and evicts the pods of the namespace under test on it (kubectl drain's rules
for which pods: DaemonSet and mirror pods stay). The drain is scoped to the test's
namespace on purpose: Knative's own activator, webhook and Kourier gateway have
PodDisruptionBudgets (minAvailable 80 %) that refuse eviction of their only replica, and
evicting the gateway or activator would cut requests for reasons that are not the app's.
Which pods then terminate is decided by Knative and Kubernetes; the pod watch sees it.
A container restart asks the fixture app to fail its liveness probe (``/fail-liveness``):
kubelet's own probe then restarts the user container.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import requests
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import RetryError, retry, retry_if_exception, stop_after_delay, wait_fixed

from .api import (
    FIELD_MANAGER,
    SERVING_NAMESPACE,
    ClusterError,
    knative_serving_version,
    through_webhook,
)
from .ksvc import FAIL_LIVENESS_PATH

PA_GROUP, PA_VERSION, PA_PLURAL = "autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers"
SERVICE_LABEL = "serving.knative.dev/service"
ACTIVATOR_SELECTOR = "app=activator"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
ROLLOUT_ANNOTATION = "knative-drain/rollout"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
EVICTION_RETRY_S = 120.0  # a PodDisruptionBudget may refuse (429) until others are back


def _ready(pod: k8s.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


#: First Knative Serving minor whose revision reconciler copies the Revision's autoscaling
#: annotations onto its PodAutoscaler (knative/serving #16186).
REVISION_OWNS_PA_ANNOTATIONS = (1, 21)


def scale_revision(
    api: k8s.ApiClient,
    namespace: str,
    service: str,
    scale: int,
    serving_version: str | None = None,
) -> list[str]:
    """Set min-scale = max-scale = ``scale`` on ``service``'s PodAutoscalers, and on their
    Revisions too when ``serving_version`` (detected when None) is 1.21 or newer."""
    custom = k8s.CustomObjectsApi(api)
    if serving_version is None:
        serving_version = knative_serving_version(api)[0]
    found = re.match(r"v?(\d+)\.(\d+)", serving_version or "")
    minor = (int(found[1]), int(found[2])) if found else (0, 0)  # unknown: the PA alone
    patch_revision = minor >= REVISION_OWNS_PA_ANNOTATIONS
    listed = custom.list_namespaced_custom_object(
        PA_GROUP, PA_VERSION, namespace, PA_PLURAL, label_selector=f"{SERVICE_LABEL}={service}"
    )
    names = [item["metadata"]["name"] for item in listed.get("items", [])]
    if not names:
        raise ClusterError(
            f"scale-down: no PodAutoscaler labelled {SERVICE_LABEL}={service} in {namespace} "
            "(has Knative created the revision?)"
        )
    body = {"metadata": {"annotations": {MIN_SCALE: str(scale), MAX_SCALE: str(scale)}}}
    for name in names:  # a PA is named after its Revision
        if patch_revision:
            through_webhook(
                lambda name=name: custom.patch_namespaced_custom_object(
                    "serving.knative.dev", "v1", namespace, "revisions", name, body
                ),
                f"patch Revision {namespace}/{name}",
            )
        through_webhook(
            lambda name=name: custom.patch_namespaced_custom_object(
                PA_GROUP, PA_VERSION, namespace, PA_PLURAL, name, body
            ),
            f"patch PodAutoscaler {namespace}/{name}",
        )
    return names


def roll_out(api: k8s.ApiClient, namespace: str, service: str, stamp: str) -> None:
    """Change the Service template (an annotation): Knative makes a new revision."""
    body = {"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: stamp}}}}}
    through_webhook(
        lambda: k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
            "serving.knative.dev", "v1", namespace, "services", service, body
        ),
        f"patch Knative Service {namespace}/{service}",
    )


def ready_activators(api: k8s.ApiClient) -> list[str]:
    """Names of the Ready, not-terminating activator pods, sorted."""
    pods = (
        k8s.CoreV1Api(api)
        .list_namespaced_pod(SERVING_NAMESPACE, label_selector=ACTIVATOR_SELECTOR)
        .items
    )
    return sorted(
        p.metadata.name for p in pods if _ready(p) and p.metadata.deletion_timestamp is None
    )


def pick_activator(api: k8s.ApiClient) -> tuple[str, int]:
    """(an activator pod to delete, how many were Ready); the Knative config set the count."""
    ready = ready_activators(api)
    if not ready:
        raise ClusterError(f"activator trigger: no Ready activator pod in {SERVING_NAMESPACE}")
    return ready[0], len(ready)


def delete_pod(api: k8s.ApiClient, namespace: str, name: str, grace_s: int | None) -> None:
    """Delete one pod; ``grace_s`` None keeps the pod's own grace period."""
    kwargs = {} if grace_s is None else {"grace_period_seconds": int(grace_s)}
    try:
        k8s.CoreV1Api(api).delete_namespaced_pod(name, namespace, **kwargs)
    except ApiException as exc:
        if exc.status != 404:
            raise ClusterError(
                f"delete pod {namespace}/{name}: {exc.status} {exc.reason}"
            ) from None


def set_unschedulable(api: k8s.ApiClient, node: str, unschedulable: bool) -> None:
    """Cordon (True) or uncordon (False) a node."""
    k8s.CoreV1Api(api).patch_node(
        node, {"spec": {"unschedulable": unschedulable or None}}, field_manager=FIELD_MANAGER
    )


def evictable(pod: k8s.V1Pod) -> bool:
    """kubectl drain's rules: not a DaemonSet pod, not a mirror pod, not already leaving."""
    owners = pod.metadata.owner_references or []
    if any(o.kind == "DaemonSet" for o in owners):
        return False
    if MIRROR_ANNOTATION in (pod.metadata.annotations or {}):
        return False
    if pod.metadata.deletion_timestamp is not None:
        return False
    return (pod.status.phase if pod.status else None) not in ("Succeeded", "Failed")


def drain_node(
    api: k8s.ApiClient,
    node: str,
    namespace: str,
    *,
    retry_s: float = EVICTION_RETRY_S,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Cordon ``node`` and evict the evictable pods of ``namespace`` on it (``ns/name``).

    Evictions refused with 429 (a PodDisruptionBudget) are retried until ``retry_s``;
    the pods then terminate with their own grace periods, as under ``kubectl drain``.
    """
    core = k8s.CoreV1Api(api)
    set_unschedulable(api, node, True)
    pods = core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={node}").items
    evicted = []
    for pod in pods:
        if not evictable(pod):
            continue
        ns, name = pod.metadata.namespace, pod.metadata.name
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=ns))

        @retry(
            retry=retry_if_exception(lambda e: isinstance(e, ApiException) and e.status == 429),
            stop=stop_after_delay(retry_s),
            wait=wait_fixed(2),
            before_sleep=lambda s, ns=ns, name=name: progress(
                f"eviction of {ns}/{name} refused by a PodDisruptionBudget (try "
                f"{s.attempt_number}), retrying"
            ),
        )
        def evict(ns: str = ns, name: str = name, body: k8s.V1Eviction = body) -> None:
            try:
                core.create_namespaced_pod_eviction(name, ns, body)
            except ApiException as exc:
                if exc.status != 404:
                    raise

        try:
            evict()
        except RetryError:
            raise ClusterError(
                f"node drain: eviction of {ns}/{name} still refused after {retry_s:.0f} s "
                "(PodDisruptionBudget)"
            ) from None
        except ApiException as exc:
            raise ClusterError(
                f"node drain: evict {ns}/{name}: {exc.status} {exc.reason}"
            ) from None
        evicted.append(f"{ns}/{name}")
    return evicted


def fail_liveness(url: str, headers: dict[str, str]) -> str:
    """Ask the app behind the ingress to fail its liveness probe from now on (the fixture
    apps' ``/fail-liveness``): the trigger, sent once, never a measured request. Its answer's
    first line, or a ClusterError saying the app does not serve it."""
    where = url.rstrip("/") + FAIL_LIVENESS_PATH
    try:
        answer = requests.get(where, headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise ClusterError(f"container-restart: GET {where} failed: {exc}") from None
    line = answer.text.strip().splitlines()[0] if answer.text.strip() else ""
    if answer.status_code != 200:
        raise ClusterError(
            f"container-restart: GET {FAIL_LIVENESS_PATH} answered {answer.status_code} "
            f"{line[:120]!r}: the app does not serve the fixture apps' liveness contract "
            "(fixtures/apps/README.md)"
        )
    return line


def rollout_stamp() -> str:
    """A value that differs on every rollout."""
    return f"{time.time():.3f}"
