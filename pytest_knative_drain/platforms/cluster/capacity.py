"""How many revision pods a cluster can still schedule, by CPU requests.

Why: cases at once share the nodes, and the scheduler places pods by their CPU *requests*,
not by use. On one kind node of this 2-core machine the control plane, Knative and
Kourier request 1.85 of 2 CPUs; each revision pod requests queue-proxy's 25m. At 4 cases
at once (2026-12-04, Knative 1.23) pods sat Pending ("Insufficient cpu") for up to 100 s:
one case's pods never became Ready, another's rollout came too late to test anything.
So the run reads the figure and says when the asked concurrency cannot fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from .api import REQUEST_TIMEOUT, SERVING_NAMESPACE, api_call

#: config-deployment's default queue-sidecar-cpu-request (knative/serving config/core)
QUEUE_CPU_REQUEST_M = 25


@dataclass(frozen=True)
class Capacity:
    """CPU (millicores) not yet requested on schedulable nodes, and what a revision pod asks."""

    unrequested_m: int
    pod_request_m: int
    nodes: int

    @property
    def pods(self) -> int:
        """Revision pods that still fit (the app container requests nothing here)."""
        return self.unrequested_m // max(self.pod_request_m, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_unrequested_m": self.unrequested_m,
            "revision_pod_cpu_request_m": self.pod_request_m,
            "revision_pods_that_fit": self.pods,
            "schedulable_nodes": self.nodes,
        }


def millicores(quantity: str | None) -> int:
    """``"250m"`` -> 250, ``"2"`` -> 2000, ``"1.5"`` -> 1500; None or "" -> 0."""
    if not quantity:
        return 0
    text = str(quantity)
    if text.endswith("m"):
        return int(float(text[:-1]))
    return int(float(text) * 1000)


def read_capacity(api: k8s.ApiClient) -> Capacity:
    """Unrequested CPU over schedulable nodes, and the queue-proxy request pods get."""
    core = k8s.CoreV1Api(api)
    with api_call("read the nodes' CPU and the pods' requests", api):
        nodes = [
            n for n in core.list_node(_request_timeout=REQUEST_TIMEOUT).items if _schedulable(n)
        ]
        pods = core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
            _request_timeout=REQUEST_TIMEOUT,
        ).items
        try:
            deployment = core.read_namespaced_config_map(
                "config-deployment", SERVING_NAMESPACE, _request_timeout=REQUEST_TIMEOUT
            )
            data = deployment.data or {}
        except k8s.ApiException:
            data = {}
    names = {n.metadata.name for n in nodes}
    allocatable = sum(millicores((n.status.allocatable or {}).get("cpu")) for n in nodes)
    requested = sum(
        millicores(((c.resources and c.resources.requests) or {}).get("cpu"))
        for p in pods
        if p.spec.node_name in names
        for c in p.spec.containers
    )
    pod_request = millicores(data.get("queue-sidecar-cpu-request")) or QUEUE_CPU_REQUEST_M
    return Capacity(max(allocatable - requested, 0), pod_request, len(nodes))


def _schedulable(node: k8s.V1Node) -> bool:
    """Revision pods can land here: not cordoned, no NoSchedule/NoExecute taint (kind's
    control plane has one as soon as the cluster has a worker)."""
    taints = node.spec.taints or []
    return not node.spec.unschedulable and not any(
        t.effect in ("NoSchedule", "NoExecute") for t in taints
    )


def too_many(capacity: Capacity, peak: int, workers: int) -> tuple[dict[str, Any], str | None]:
    """(the report's figures, what to say when ``workers`` cases of up to ``peak`` revision
    pods each cannot all be scheduled at once, else None)."""
    fit = fitting_cases(capacity, peak)
    figures = {**capacity.to_dict(), "cases_that_fit": fit}
    if workers <= fit:
        return figures, None
    return figures, (
        f"--drain-concurrency: {workers} cases at once, but the cluster's nodes have "
        f"{capacity.unrequested_m}m CPU unrequested: {capacity.pods} revision pods of "
        f"{capacity.pod_request_m}m, {fit} case(s) of up to {peak} pods; the rest will "
        "wait Pending (Insufficient cpu) and a late trigger makes a run inconclusive"
    )


def fitting_cases(capacity: Capacity, pods_per_case: int) -> int:
    """Cases whose pods (at their peak: old and new during a rollout or a delete) fit."""
    return max(1, capacity.pods // max(pods_per_case, 1))
