"""Whether the cluster failed under a case, so that no verdict is given on it.

Two kinds: a container of the revision's pod that cannot start (a failed pull, no
command, a crash loop: waiting longer will not help, so the wait ends at once with the
reason), and a cluster that fails while the case waits for its pods (a node stopped or
not Ready, an API server that stops answering). Measured traffic then says nothing of
draining: the case is an infrastructure error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from .api import API_ERRORS, REQUEST_TIMEOUT, ClusterError, cluster_error, host_of

#: The API server may fail a call or two (a leader change, a restart); unanswered this long
#: while a case waits, the cluster failed under it: the case ends without a verdict.
API_UNREACHABLE_S = 30.0
#: connect, read: a dropped connection (packets that never come back) is seen in time
FAULT_REQUEST_TIMEOUT = (5.0, 10.0)
FAULT_POLL_S = 2.0  # how often a wait for a pod's end looks at its nodes and the API server
#: Why a node (by name) cannot run pods, from outside Kubernetes (kind: its container's
#: state in Docker, seen at once, where the node's Ready condition takes 40 s), or None.
NodeProbe = Callable[[str], "str | None"]


#: A container waiting for one of these will not start by waiting longer: kubelet backs off
#: (ImagePullBackOff comes after a failed pull; ErrImagePull alone may be a passing flake).
HOPELESS_WAITS = (
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
)


class ContainerStartError(ClusterError):
    """A container of the revision's pod cannot start: waiting longer will not help.

    ``container`` is whose fault it is (user-container: the app's image; queue-proxy: the
    platform's); the message has the reason, the exit code and the log tail.
    """

    def __init__(self, message: str, container: str) -> None:
        super().__init__(message)
        self.container = container


def unreachable(exc: BaseException) -> bool:
    """The API server was not reached or failed (5xx): the cluster's fault, not the call's."""
    return not isinstance(exc, ApiException) or not exc.status or exc.status >= 500


class FaultWatch:
    """Looks at the nodes a case's pods run on and at the API server between waits."""

    def __init__(
        self, api: k8s.ApiClient, core: k8s.CoreV1Api, node_probe: NodeProbe | None = None
    ) -> None:
        self.api = api
        self.core = core
        self.node_probe = node_probe
        self.nodes: set[str] = set()  # where the case's pods run: their failure is a fault
        self._api_down_since: float | None = None

    def fault(self, pod: str | None) -> str | None:
        """Why the cluster failed under the case of ``pod``, or None."""
        for node in sorted(self.nodes):
            if self.node_probe is not None:
                why = self.node_probe(node)
                if why is not None:
                    return why
            asked = time.monotonic()
            try:
                obj = self.core.read_node(node, _request_timeout=FAULT_REQUEST_TIMEOUT)
            except API_ERRORS as exc:
                if isinstance(exc, ApiException) and exc.status == 404:
                    return f"node {node} of pod {pod} was deleted from the cluster"
                if not unreachable(exc):
                    return None  # our request's fault (RBAC): not the cluster's; say nothing
                now = time.monotonic()
                self._api_down_since = self._api_down_since or asked
                if now - self._api_down_since < API_UNREACHABLE_S:
                    return None
                return (
                    f"{cluster_error('read node ' + node, exc, host_of(self.api))} "
                    f"for {now - self._api_down_since:.0f} s"
                )
            self._api_down_since = None
            conditions = (obj.status.conditions if obj.status else None) or []
            ready = next((c for c in conditions if c.type == "Ready"), None)
            if ready is not None and ready.status != "True":
                return (
                    f"node {node} of pod {pod} is not Ready: Ready={ready.status} "
                    f"{ready.reason or ''}: {' '.join((ready.message or '').split())[:200]}"
                )
        return None


def raise_if_hopeless(core: k8s.CoreV1Api, namespace: str, selector: str) -> None:
    """ContainerStartError when a container of a revision pod cannot start (a failed
    pull, no command, it exited): one line now, not the Ready wait's 300 s. Knative's
    own status says so only after the Deployment's progress deadline (10 min)."""
    pods = core.list_namespaced_pod(
        namespace,
        label_selector=selector,
        _request_timeout=REQUEST_TIMEOUT,
    ).items
    for pod in pods:
        for status in (pod.status.container_statuses if pod.status else None) or []:
            waiting = status.state.waiting if status.state else None
            last = status.last_state.terminated if status.last_state else None
            if waiting is None or waiting.reason not in HOPELESS_WAITS:
                continue
            why = f"{waiting.reason}: {' '.join((waiting.message or '').split())[:300]}"
            if last is not None:
                why = (
                    f"exited with code {last.exit_code}"
                    + (f" ({last.reason})" if last.reason else "")
                    + f", {status.restart_count} restart(s), now {waiting.reason}"
                    + (f": {' '.join(last.message.split())[:200]}" if last.message else "")
                    + _log_tail(core, namespace, pod.metadata.name, status.name)
                )
            raise ContainerStartError(
                f"pod {pod.metadata.name}: {status.name} cannot start: {why}", status.name
            )


def _log_tail(
    core: k8s.CoreV1Api, namespace: str, pod: str, container: str, lines: int = 10
) -> str:
    """``; log tail: ...`` of the container's previous run, or nothing."""
    try:
        text = core.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            previous=True,
            tail_lines=lines,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except API_ERRORS:
        return ""
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return f"; log tail: {text[-400:]}" if text else "; log empty"
