"""A Knative revision pod on a real cluster: the cluster twin of ``local.LocalPod``.

Same interface as LocalPod (``url``, ``headers``, ``events``, ``delete``, ``wait_gone``,
``collect_logs``, ``logs``, context manager) so the runner does not care where pods run.
Per test: a namespace, a Knative Service rendered from ``KsvcSpec``, a wait for the
Service's Ready condition, then the revision pod (label ``serving.knative.dev/service``).
A pod watch records the timeline (phase, readiness, deletionTimestamp, container states);
deletion is CoreV1 ``delete_namespaced_pod`` with a grace period, and the pod is gone when
the API server no longer has the object. Requests go to the ingress on 127.0.0.1 with the
Service's host in a Host header.

This module owns the case's life (start, trigger, wait for the end, evidence, removal);
the watch is pod_watch.py, the log followers pod_logs.py, the fault checks faults.py,
and what each trigger does to the cluster triggers.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from ...matrix.scenarios import Trigger
from ..pod import InfrastructureError, PodEvent, Termination
from . import restart_watch
from . import triggers as cluster_triggers
from .api import (
    API_ERRORS,
    REQUEST_TIMEOUT,
    SERVING_NAMESPACE,
    ClusterError,
    Progress,
    cluster_error,
    error_line,
    host_of,
    wait_until,
)
from .apply import Applier
from .changes import Namespaces
from .faults import FAULT_POLL_S, FaultWatch, NodeProbe, raise_if_hopeless, unreachable
from .ksvc import FAIL_LIVENESS_PATH, KsvcSpec, render_ksvc
from .pod_logs import NORMAL_ENDS, LogFollower
from .pod_watch import PodWatch, pod_ready, sigkilled

SERVICE_LABEL = "serving.knative.dev/service"
CONTAINERS = ("queue-proxy", "user-container")
READY_TIMEOUT_S = 300.0


def _quiet(_: str) -> None:
    pass


# -- the pod target ------------------------------------------------------------------------
class KnativePod:
    """One Knative Service (and its revision pod) per test on a cluster; removed on exit."""

    def __init__(
        self,
        api: k8s.ApiClient,
        spec: KsvcSpec,
        *,
        namespaces: Namespaces,
        ingress_url: str,
        ingress_forwarded: bool = False,
        ready_timeout_s: float = READY_TIMEOUT_S,
        progress: Progress = _quiet,
        keep: bool = False,
        node_probe: NodeProbe | None = None,
    ) -> None:
        spec.check()
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.faults = FaultWatch(api, self.core, node_probe)
        self.spec = spec
        self.namespaces = namespaces
        self.ingress_url = ingress_url
        #: the ingress is a port-forward the user runs: its breaking is infrastructure
        self.ingress_forwarded = ingress_forwarded
        self.ready_timeout_s = ready_timeout_s
        self.progress = progress
        self.keep = keep
        self.namespace: str | None = None
        self.name: str | None = None  # the pod under test, once Ready
        self.host: str | None = None
        self.termination: Termination | None = None
        self.logs: dict[str, str] = {}
        self.followers: dict[str, LogFollower] = {}  # log key -> follower (see follow_logs)
        self._ready_pods: list[str] = []
        self._own_events: list[PodEvent] = []
        self._watch: PodWatch | None = None
        self._activator_watch: PodWatch | None = None
        self._applier: Applier | None = None
        self._awaited: list[tuple[PodWatch, str]] | None = None  # None: pods that get deleted
        self._cordoned: str | None = None  # a node this pod's trigger cordoned
        self._restarting = False  # the trigger restarts the user container: the pod stays

    @property
    def nodes(self) -> set[str]:
        """The nodes the case's pods run on (a fault there ends the case without a verdict)."""
        return self.faults.nodes

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> KnativePod:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def events(self) -> list[PodEvent]:
        """Our own steps and the watch's observations, in time order."""
        watched = []
        for watch in (self._watch, self._activator_watch):
            if watch is not None:
                watched += list(watch.events)
        return sorted(self._own_events + watched, key=lambda e: e.mono)

    def event(self, name: str, detail: str = "") -> PodEvent:
        ev = PodEvent(self.name or self.spec.name, name, time.monotonic(), time.time(), detail)
        self._own_events.append(ev)
        return ev

    def start(self) -> None:
        """Namespace, watch, Knative Service; wait until it is Ready and its pod is Ready."""
        self.namespace = self.namespaces.create("drain")
        self._watch = PodWatch(
            self.api, self.namespace, f"{SERVICE_LABEL}={self.spec.name}"
        ).start()
        self._applier = Applier(self.api, progress=self.progress)
        [ref] = self._applier.apply([render_ksvc(self.spec, self.namespace)])
        self.event("ksvc applied", f"{ref}")
        applier = self._applier

        def service_ready() -> str | None:
            status = applier.get(ref).get("status") or {}
            conditions = status.get("conditions") or []
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready is None or ready.get("status") != "True":
                why = "no Ready condition yet (is the Knative controller running?)"
                if ready is not None:
                    why = f"Ready={ready.get('status')} {ready.get('reason') or ''}: " + (
                        ready.get("message") or ""
                    )
                return f"{ref}: {why}"
            self.host = urlparse(status.get("url") or "").hostname
            return None

        def ready_or_hopeless() -> str | None:
            self._raise_if_hopeless()
            return service_ready()

        self._wait_until(
            ready_or_hopeless,
            f"Knative Service {self.namespace}/{self.spec.name} Ready",
            self.ready_timeout_s,
        )
        self.name = self._find_pod()
        self.event("ready", f"pod {self.name}, host {self.host}")
        self.follow_logs()

    def _raise_if_hopeless(self) -> None:
        assert self.namespace is not None
        raise_if_hopeless(self.core, self.namespace, f"{SERVICE_LABEL}={self.spec.name}")

    def follow_logs(self) -> None:
        """Follow every container of the Service's Ready pods from now on, while they exist.

        The pod under test's logs are keyed by container name, its peers' (the pods a
        scale-down or rollout may end instead) by ``"<container> <pod>"``. Pods created
        later (a burst) are not followed; ``collect_logs`` reads them while they exist.
        """
        assert self.namespace is not None and self.name is not None
        for pod in [self.name, *(p for p in self._ready_pods if p != self.name)]:
            for container in CONTAINERS:
                key = container if pod == self.name else f"{container} {pod}"
                if key not in self.followers:
                    self.followers[key] = LogFollower(
                        self.core, self.namespace, pod, container
                    ).start()

    def stop_following(self) -> None:
        """End every log follower (threads joined, streams closed)."""
        for follower in self.followers.values():
            follower.stop()

    def _find_pod(self, timeout_s: float = 120.0) -> str:
        """The first of the revision's Ready pods, once min-scale of them are Ready."""
        found: list[str] = []
        assert self.namespace is not None
        want = max(1, self.spec.min_scale)

        def check() -> str | None:
            pods = self.core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{SERVICE_LABEL}={self.spec.name}",
                _request_timeout=REQUEST_TIMEOUT,
            ).items
            ready = [p for p in pods if pod_ready(p) and p.metadata.deletion_timestamp is None]
            if len(ready) < want:
                return (
                    f"{len(ready)}/{want} Ready pods with {SERVICE_LABEL}={self.spec.name} "
                    f"({len(pods)} pods)"
                )
            self._ready_pods = sorted(p.metadata.name for p in ready)
            self.faults.nodes |= {p.spec.node_name for p in ready if p.spec and p.spec.node_name}
            found.append(self._ready_pods[0])
            return None

        self._wait_until(check, f"revision pod of {self.spec.name}", timeout_s)
        return found[-1]

    @property
    def url(self) -> str:
        """The ingress (on kind: Kourier's NodePort on loopback); the Host header picks the
        Knative Service."""
        return self.ingress_url

    @property
    def headers(self) -> dict[str, str]:
        """Host of the Knative Service (its status.url host, else <svc>.<ns>.svc default)."""
        return {"Host": self.host or f"{self.spec.name}.{self.namespace}.127.0.0.1.sslip.io"}

    # -- deletion ------------------------------------------------------------------------
    def delete(self, grace_s: float | None = None) -> Termination:
        """Ask the API server to delete the pod (grace: the pod's own unless given)."""
        if self.name is None or self.namespace is None:
            raise ClusterError("delete() before the pod was found (start() first)")
        grace = grace_s
        if grace is None:
            pod = self._watch.last(self.name) if self._watch else None
            spec_grace = pod.spec.termination_grace_period_seconds if pod is not None else None
            grace = float(spec_grace if spec_grace is not None else self.spec.timeout_seconds)
        how = (
            f"grace_period_seconds={grace_s:g}"
            if grace_s is not None
            else f"pod's own terminationGracePeriodSeconds={grace:g}"
        )
        t0 = self.event("delete", how)
        self.termination = Termination(t0_mono=t0.mono, grace_s=float(grace))
        if self._watch is not None:
            self._awaited = [(self._watch, self.name)]
        kwargs: dict[str, Any] = {}
        if grace_s is not None:
            kwargs["grace_period_seconds"] = int(grace_s)
        try:
            self.core.delete_namespaced_pod(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except API_ERRORS as exc:
            if not (isinstance(exc, ApiException) and exc.status == 404):
                doing = f"delete pod {self.namespace}/{self.name}"
                if unreachable(exc):  # the cluster failed, not our request
                    raise InfrastructureError(
                        f"{cluster_error(doing, exc, host_of(self.api))}; no verdict"
                    ) from None
                raise ClusterError(f"{doing} on {host_of(self.api)}: {error_line(exc)}") from None
        return self.termination

    def trigger(self, trigger: Trigger) -> Termination:
        """Fire ``trigger``; ``wait_gone`` then waits for the pods it made terminate."""
        if self.name is None or self.namespace is None:
            raise ClusterError(f"{trigger.name} before the pod was found (start() first)")
        assert self._watch is not None
        if trigger.name in ("pod-delete", "pod-kill"):
            return self.delete(trigger.grace_s)
        grace = float(self.spec.timeout_seconds)
        if trigger.name == "scale-down":
            target = max(1, self.spec.min_scale - 1)
            t0 = self.event("scale-down", f"PodAutoscaler min/max-scale -> {target}")
            names = cluster_triggers.scale_revision(
                self.api, self.namespace, self.spec.name, target
            )
            self.event("PodAutoscaler patched", ", ".join(names))
        elif trigger.name == "autoscale-down":
            t0 = self.event("burst over", "the autoscaler decides which pods go")
        elif trigger.name == "rollout":
            t0 = self.event("rollout", f"template annotation {cluster_triggers.ROLLOUT_ANNOTATION}")
            cluster_triggers.roll_out(
                self.api, self.namespace, self.spec.name, cluster_triggers.rollout_stamp()
            )
        elif trigger.name == "node-drain":
            pod = self._watch.last(self.name)
            node = pod.spec.node_name if pod is not None and pod.spec else None
            if not node:
                raise ClusterError(f"node-drain: pod {self.namespace}/{self.name} has no node")
            t0 = self.event("node-drain", f"cordon and evict node {node}")
            self._cordoned = node
            evicted = cluster_triggers.drain_node(
                self.api, node, self.namespace, progress=self.progress
            )
            self.event("evicted", ", ".join(evicted) or "nothing")
            self._awaited = [
                (self._watch, ref.split("/", 1)[1])
                for ref in evicted
                if ref.split("/", 1)[0] == self.namespace
            ]
            if not self._awaited:
                raise ClusterError(
                    f"node-drain: no pod of {self.namespace}/{self.spec.name} was evicted "
                    f"from node {node} (evicted: {', '.join(evicted) or 'nothing'})"
                )
        elif trigger.name == "container-restart":
            t0 = self.event(
                "liveness restart",
                f"GET {FAIL_LIVENESS_PATH}: user-container's liveness probe (every 1 s, one "
                "failure) fails from now on; kubelet restarts it, queue-proxy stays",
            )
            self.event("liveness failing", cluster_triggers.fail_liveness(self.url, self.headers))
            self._restarting = True
        elif trigger.name in ("activator-delete", "activator-kill"):
            self._activator_watch = PodWatch(
                self.api, SERVING_NAMESPACE, cluster_triggers.ACTIVATOR_SELECTOR
            ).start()
            victim, ready = cluster_triggers.pick_activator(self.api)
            own = self._activator_watch.last(victim)
            own_grace = own.spec.termination_grace_period_seconds if own is not None else None
            grace = float(trigger.grace_s if trigger.grace_s is not None else (own_grace or 30))
            how = "its own grace" if trigger.grace_s is None else f"grace {trigger.grace_s}"
            t0 = self.event(
                trigger.name, f"delete activator pod {victim} ({how}; {ready} Ready activators)"
            )
            cluster_triggers.delete_pod(self.api, SERVING_NAMESPACE, victim, trigger.grace_s)
            self._awaited = [(self._activator_watch, victim)]
        else:
            raise ClusterError(f"unknown trigger {trigger.name!r}")
        self.termination = Termination(t0_mono=t0.mono, grace_s=grace)
        return self.termination

    def _deleted_since(self, t0: float) -> list[str]:
        """Pods of the Service whose deletion the watch saw at or after ``t0``."""
        assert self._watch is not None
        return sorted(
            {
                e.pod
                for e in self._watch.events
                if e.mono >= t0 and e.name in ("deletionTimestamp set", "gone")
            }
        )

    def wait_gone(self, timeout_s: float | None = None) -> Termination:
        """Block until the pods the trigger ended are gone from the API server (bounded)."""
        if self.termination is None or self.name is None or self.namespace is None:
            raise ClusterError(f"pod {self.name} was never deleted (no trigger fired)")
        limit = timeout_s if timeout_s is not None else self.termination.grace_s + 60
        end = time.monotonic() + limit
        assert self._watch is not None
        if self._restarting:
            return self._wait_ready_again(limit)
        awaited = self._awaited
        if awaited is None:  # scale-down, rollout: Knative decides which pods go
            t0 = self.termination.t0_mono

            def check() -> str | None:
                if self._deleted_since(t0):
                    return None
                self.raise_fault()
                return f"no pod with {SERVICE_LABEL}={self.spec.name} began terminating yet"

            self._wait_until(
                check,
                f"a pod of {self.namespace}/{self.spec.name} to terminate after the trigger",
                max(1.0, end - time.monotonic()),
            )
            awaited = [(self._watch, name) for name in self._deleted_since(t0)]
        for watch, name in awaited:
            left = max(0.0, end - time.monotonic())
            namespace = watch.namespace
            if not self._wait_gone(watch, name, left) and not self._absent(name, namespace):
                self.raise_fault()
                raise ClusterError(
                    f"pod {namespace}/{name} still exists {limit:.0f} s after the trigger "
                    f"(grace {self.termination.grace_s:g} s; is the node's kubelet running?)"
                )
        names = {name for _, name in awaited}
        self.termination.pods = sorted(names)
        events = self.events
        gone = [e.mono for e in events if e.pod in names and e.name == "gone"]
        self.termination.gone_mono = max(gone) if gone else time.monotonic()
        self.termination.killed = sorted(
            {
                e.name.rsplit(" ", 1)[0]
                for e in events
                if e.pod in names and e.name.endswith(" exited") and sigkilled(e.detail)
            }
        )
        return self.termination

    def _wait_until(self, check: Callable[[], str | None], what: str, timeout_s: float) -> None:
        """``wait_until`` with this case's progress line and API server."""
        wait_until(check, what, timeout_s=timeout_s, progress=self.progress, host=host_of(self.api))

    def _wait_ready_again(self, limit: float) -> Termination:
        """After a container restart: wait until the pod is Ready with its new user
        container; "ready again" (or "not ready again") goes on the timeline."""
        assert self.termination is not None and self._watch is not None and self.name
        t0, name, watch = self.termination.t0_mono, self.name, self._watch

        def check() -> str | None:
            self.raise_fault()
            return restart_watch.still_missing(watch, name, t0)

        try:
            self._wait_until(
                check,
                f"pod {self.namespace}/{name} Ready again after its user-container restart",
                limit,
            )
        except ClusterError as exc:  # the verdict says it; a fault has raised already
            self.event("not ready again", str(exc))
        end = restart_watch.read_end(watch, name, t0)
        if end.ready_again is not None and not any(
            e.name == "not ready again" for e in self._own_events
        ):
            self._own_events.append(end.ready_again)
        self.termination.pods = [name]
        self.termination.gone_mono = end.exited.mono if end.exited is not None else None
        self.termination.killed = ["user-container"] if end.killed else []
        return self.termination

    def _wait_gone(self, watch: PodWatch, name: str, timeout_s: float) -> bool:
        """``watch.wait_gone`` in slices, looking for a fault between them: a stopped node
        or an unreachable API server ends the wait now, not at its bound."""
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if watch.wait_gone(name, max(0.0, min(FAULT_POLL_S, left))):
                return True
            if left <= FAULT_POLL_S:
                return False
            self.raise_fault()

    def raise_fault(self) -> None:
        """InfrastructureError when the cluster failed under the case: a node its pods ran
        on is stopped (the platform's probe) or not Ready, or the API server has not
        answered for API_UNREACHABLE_S. What was measured then says nothing of draining."""
        fault = self.faults.fault(self.name)
        if fault is not None:
            self.event("infrastructure fault", fault)
            raise InfrastructureError(f"{fault}; no verdict")

    def _absent(self, name: str | None = None, namespace: str | None = None) -> bool:
        """True when the API server says the pod is gone (404); False when it exists or the
        server cannot say (the caller then reports the pod as still there)."""
        try:
            self.core.read_namespaced_pod(
                name or self.name, namespace or self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            return exc.status == 404
        except (Urllib3Error, OSError):
            return False
        return False

    # -- evidence and cleanup ------------------------------------------------------------
    def collect_logs(self, tail: int = 400) -> dict[str, str]:
        """queue-proxy and user-container logs of the pod, the namespace's events, and the
        activators' logs after an activator trigger (the deleted one's are gone with it).

        Container logs come from the followers started when the pod was picked (they hold
        what was written up to the container's exit, the pod may be gone by now); a
        container whose follower caught nothing is read directly while its pod exists.
        """
        if self.namespace is None:
            return self.logs
        for key, follower in self.followers.items():
            text = follower.text
            if text:
                if follower.truncated:
                    text = f"(older output dropped: newest {follower.limit_bytes} bytes)\n{text}"
                if follower.note not in NORMAL_ENDS:  # cut short: say why the log stops here
                    text += f"\n(log follower: {follower.note})"
                self.logs[key] = text
                continue
            try:
                self.logs[key] = self.core.read_namespaced_pod_log(
                    follower.pod,
                    self.namespace,
                    container=follower.container,
                    tail_lines=tail,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except API_ERRORS as exc:
                self.logs[key] = f"(no log: follower: {follower.note}; read: {error_line(exc)})"
        if self._activator_watch is not None:  # an activator trigger ran: its peers' view
            try:
                for name in cluster_triggers.ready_activators(self.api):
                    self.logs[f"activator {name}"] = self.core.read_namespaced_pod_log(
                        name,
                        SERVING_NAMESPACE,
                        container="activator",
                        tail_lines=tail,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
            except (ApiException, Urllib3Error, OSError) as exc:
                self.logs["activator"] = f"(no log: {getattr(exc, 'reason', None) or exc})"
        try:
            items = self.core.list_namespaced_event(
                self.namespace, _request_timeout=REQUEST_TIMEOUT
            ).items
            lines = [
                f"{e.last_timestamp or e.event_time or ''} {e.type} {e.reason} "
                f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
                for e in items
            ]
            self.logs["events"] = "\n".join(lines)
        except (ApiException, Urllib3Error, OSError) as exc:
            self.logs["events"] = f"(no events: {exc})"
        return self.logs

    def remove(self) -> None:
        """Stop the watches and log followers, collect logs, delete the namespace (unless kept)."""
        for watch in (self._watch, self._activator_watch):
            if watch is not None:
                watch.stop()
        self.stop_following()
        if self._cordoned is not None:
            with contextlib.suppress(ApiException, Urllib3Error, OSError):
                cluster_triggers.set_unschedulable(self.api, self._cordoned, False)
                self.progress(f"node {self._cordoned} uncordoned")
            self._cordoned = None
        if self._applier is not None:
            self._applier.close()
        with contextlib.suppress(ClusterError):
            self.collect_logs()
        if self.namespace is not None and not self.keep:
            self.namespaces.delete(self.namespace)
