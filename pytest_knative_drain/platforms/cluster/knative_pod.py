"""A Knative revision pod on a real cluster: the cluster twin of ``local.LocalPod``.

Same interface as LocalPod (``url``, ``headers``, ``events``, ``delete``, ``wait_gone``,
``collect_logs``, ``logs``, context manager) so the runner does not care where pods run.
Per test: a namespace, a Knative Service rendered from ``KsvcSpec``, a wait for the
Service's Ready condition, then the revision pod (label ``serving.knative.dev/service``).
A pod watch records the timeline (phase, readiness, deletionTimestamp, container states);
deletion is CoreV1 ``delete_namespaced_pod`` with a grace period, and the pod is gone when
the API server no longer has the object. Requests go to the ingress on 127.0.0.1 with the
Service's host in a Host header.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from ..matrix.scenarios import Trigger
from . import cluster_triggers
from .cluster import (
    API_ERRORS,
    REQUEST_TIMEOUT,
    SERVING_NAMESPACE,
    Applier,
    ClusterError,
    KsvcSpec,
    Namespaces,
    Progress,
    api_call,
    cluster_error,
    error_line,
    host_of,
    render_ksvc,
    wait_until,
)
from .pod import InfrastructureError, PodEvent, Termination

SERVICE_LABEL = "serving.knative.dev/service"
CONTAINERS = ("queue-proxy", "user-container")
READY_TIMEOUT_S = 300.0
SIGKILL_EXIT = 137  # 128 + 9: what kubelet reports for a container killed at grace end
#: A log follower ends on its own at the latest this long after it started (a backstop:
#: the case stops it when it ends; the seed profile's longest case is well under this).
LOG_FOLLOW_LIMIT_S = 2 * 3600.0
LOG_CONNECT_TIMEOUT_S = 10.0
LOG_LIMIT_BYTES = 1 << 20  # the newest bytes kept per container
STREAM_ENDED = "the container's log stream ended"  # kubelet ends it when the container exits
STOPPED = "stopped when the case ended"
NORMAL_ENDS = ("following", STREAM_ENDED, STOPPED)
#: The API server may fail a call or two (a leader change, a restart); unanswered this long
#: while a case waits, the cluster failed under it: the case ends without a verdict.
API_UNREACHABLE_S = 30.0
#: connect, read: a dropped connection (packets that never come back) is seen in time
FAULT_REQUEST_TIMEOUT = (5.0, 10.0)
FAULT_POLL_S = 2.0  # how often a wait for a pod's end looks at its nodes and the API server
#: Why a node (by name) cannot run pods, from outside Kubernetes (kind: its container's
#: state in Docker, seen at once, where the node's Ready condition takes 40 s), or None.
NodeProbe = Callable[[str], "str | None"]


def _quiet(_: str) -> None:
    pass


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


def _unreachable(exc: BaseException) -> bool:
    """The API server was not reached or failed (5xx): the cluster's fault, not the call's."""
    return not isinstance(exc, ApiException) or not exc.status or exc.status >= 500


# -- watch -> timeline ----------------------------------------------------------------------
def _ready(pod: k8s.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _container_states(pod: k8s.V1Pod) -> dict[str, tuple[str, str, bool]]:
    """container name -> (state, detail, ready)."""
    out: dict[str, tuple[str, str, bool]] = {}
    for status in (pod.status.container_statuses if pod.status else None) or []:
        state = status.state
        if state is None:
            continue
        if state.terminated is not None:
            # "exited", as on --platform=local: the verdict reads both timelines alike
            t = state.terminated
            detail = f"exit code {t.exit_code}" + (f" ({t.reason})" if t.reason else "")
            if t.exit_code == SIGKILL_EXIT and t.reason != "OOMKilled":
                detail += " after SIGKILL"
            if t.finished_at is not None:
                detail += f", finishedAt {t.finished_at:%H:%M:%S}"
            out[status.name] = ("exited", detail, bool(status.ready))
        elif state.running is not None:
            out[status.name] = ("running", "", bool(status.ready))
        elif state.waiting is not None:
            out[status.name] = ("waiting", state.waiting.reason or "", bool(status.ready))
    return out


def pod_changes(old: k8s.V1Pod | None, new: k8s.V1Pod, kind: str) -> list[tuple[str, str]]:
    """(event name, detail) for what changed between two observations of one pod.

    ``kind`` is the watch event type (ADDED, MODIFIED, DELETED).
    """
    if kind == "DELETED":
        return [("gone", "pod object removed from the API server")]
    changes: list[tuple[str, str]] = []
    if old is None:
        changes.append(("observed", f"phase {new.status.phase if new.status else None}"))
    old_phase = old.status.phase if old is not None and old.status else None
    new_phase = new.status.phase if new.status else None
    if old is not None and new_phase != old_phase:
        changes.append((f"phase {new_phase}", f"was {old_phase}"))
    if (old is None and _ready(new)) or (old is not None and _ready(old) != _ready(new)):
        changes.append(("ready" if _ready(new) else "not ready", "pod condition Ready"))
    if new.metadata.deletion_timestamp is not None and (
        old is None or old.metadata.deletion_timestamp is None
    ):
        grace = new.metadata.deletion_grace_period_seconds
        changes.append(
            (
                "deletionTimestamp set",
                f"deletionGracePeriodSeconds={grace}, at {new.metadata.deletion_timestamp}",
            )
        )
    before = _container_states(old) if old is not None else {}
    for name, (state, detail, ready) in sorted(_container_states(new).items()):
        prev = before.get(name)
        if prev is None or prev[0] != state or (state == "exited" and prev[1] != detail):
            changes.append((f"{name} {state}", detail))
        if prev is not None and prev[2] != ready:
            changes.append((f"{name} {'ready' if ready else 'not ready'}", ""))
    return changes


class PodWatch:
    """Watches the pods matching ``selector`` in ``namespace`` on a thread; records events.

    Each watch request is bounded (``timeout_seconds``) and resumed from the last
    resourceVersion until ``stop()``; a 410 Gone restarts from a fresh list.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        selector: str,
        *,
        request_timeout_s: int = 5,
    ) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.request_timeout_s = request_timeout_s
        self.events: list[PodEvent] = []
        self.errors: list[str] = []
        self.gone: set[str] = set()
        self._last: dict[str, k8s.V1Pod] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._version = ""
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def start(self) -> PodWatch:
        """List (so nothing before the watch is missed), then watch from that version.

        An API server that cannot be reached or refuses the list is a ClusterError here;
        once running, the watch records errors in ``errors`` and keeps trying.
        """
        with api_call(f"list pods {self.selector} in {self.namespace}", self.api):
            self._version = self._list()
        self._thread.start()
        return self

    def _list(self) -> str:
        listed = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        for pod in listed.items:
            self._observe("ADDED", pod)
        return listed.metadata.resource_version or ""

    def stop(self) -> None:
        """End the watch (bounded: the current request ends within its timeout)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(self.request_timeout_s + 5)

    def _record(self, pod: str, name: str, detail: str) -> None:
        self.events.append(PodEvent(pod, name, time.monotonic(), time.time(), detail))

    def _run(self) -> None:
        version = self._version
        while not self._stop.is_set():
            self._watch = k8s_watch.Watch()
            try:
                kwargs: dict[str, Any] = {
                    "label_selector": self.selector,
                    "timeout_seconds": self.request_timeout_s,
                    "_request_timeout": self.request_timeout_s + 10,
                    "allow_watch_bookmarks": False,
                }
                if not version:
                    version = self._list()
                kwargs["resource_version"] = version
                for item in self._watch.stream(
                    self.core.list_namespaced_pod, self.namespace, **kwargs
                ):
                    if item["type"] == "ERROR":  # a Status the client did not raise for
                        self.errors.append(f"watch: {item.get('raw_object')}")
                        version = ""
                        break
                    pod: k8s.V1Pod = item["object"]
                    version = pod.metadata.resource_version or version
                    self._observe(item["type"], pod)
                    if self._stop.is_set():
                        break
                version = self._watch.resource_version or version
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    version = ""
                    continue
                self.errors.append(str(cluster_error("watch", exc, host_of(self.api))))
                self._stop.wait(1)
            except (Urllib3Error, OSError) as exc:
                self.errors.append(str(cluster_error("watch", exc, host_of(self.api))))
                self._stop.wait(1)

    def _observe(self, kind: str, pod: k8s.V1Pod) -> None:
        name = pod.metadata.name
        with self._changed:
            for event, detail in pod_changes(self._last.get(name), pod, kind):
                self._record(name, event, detail)
            if kind == "DELETED":
                self.gone.add(name)
                self._last.pop(name, None)
            else:
                self._last[name] = pod
            self._changed.notify_all()

    def last(self, name: str) -> k8s.V1Pod | None:
        """The latest observation of pod ``name`` (None before the first or after gone)."""
        with self._lock:
            return self._last.get(name)

    def wait_gone(self, name: str, timeout_s: float) -> bool:
        """True once the watch saw pod ``name`` deleted, False after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        with self._changed:
            while name not in self.gone:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True


# -- container logs while the pod exists -------------------------------------------------
class LogFollower:
    """Streams one container's log (``follow=True``) on a thread from the moment it starts.

    Why: a failed case is judged after the pod is gone, and the API server then answers
    404 to a log read; a follower started when the pod is picked holds everything the
    container wrote up to its exit (kubelet ends a follow stream when the container
    exits). It is bounded: a connect timeout, the API server's answer within
    REQUEST_TIMEOUT's read timeout, then a stream that may stay quiet until ``limit_s``
    after start (a container can log nothing for minutes), the newest ``limit_bytes``
    kept. ``stop()`` shuts an open stream down and joins the thread (a thread still
    waiting for the API server's answer ends by that timeout). It never raises into the
    case: any failure ends the thread and is kept in ``note`` (why there is no or only
    part of a log).
    """

    def __init__(
        self,
        core: k8s.CoreV1Api,
        namespace: str,
        pod: str,
        container: str,
        *,
        limit_s: float = LOG_FOLLOW_LIMIT_S,
        limit_bytes: int = LOG_LIMIT_BYTES,
        connect_timeout_s: float = LOG_CONNECT_TIMEOUT_S,
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.limit_s = limit_s
        self.limit_bytes = limit_bytes
        self.connect_timeout_s = connect_timeout_s
        self.note = "not started"
        self.truncated = False
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"log-{pod}-{container}", daemon=True
        )

    def start(self) -> LogFollower:
        self.note = "following"
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def text(self) -> str:
        """What the container wrote so far (its newest ``limit_bytes``)."""
        with self._lock:
            data = bytes(self._data)
        return data.decode("utf-8", errors="replace")

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        try:
            response = self.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container=self.container,
                follow=True,
                previous=False,
                _preload_content=False,
                _request_timeout=(self.connect_timeout_s, REQUEST_TIMEOUT[1]),
            )
            with self._lock:
                self._response = response
                stopped = self._stop.is_set()
            _quiet_for(response, max(1.0, deadline - time.monotonic()))
            if not stopped:
                # read1: whatever arrived, not a full 4096 (a log line must not wait)
                read1 = getattr(response, "read1", None)
                chunks = iter(lambda: read1(4096), b"") if read1 else response.stream(4096)
                for chunk in chunks:
                    self._keep(chunk)
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
            self.note = self._why_ended(deadline, STREAM_ENDED)
        except ApiException as exc:
            self.note = f"log API answered {error_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - a follower must never fail the case
            self.note = self._why_ended(deadline, f"{type(exc).__name__}: {exc}")
        finally:
            self._close()

    def _why_ended(self, deadline: float, otherwise: str) -> str:
        """Why the stream ended: stopped, out of time, or ``otherwise``."""
        if self._stop.is_set():
            return STOPPED
        if time.monotonic() > deadline:
            return f"stopped after {self.limit_s:.0f} s (limit)"
        return otherwise

    def _keep(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            extra = len(self._data) - self.limit_bytes
            if extra > 0:
                del self._data[:extra]
                self.truncated = True

    def _close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is None:
            return
        with contextlib.suppress(Exception):
            response.close()
            response.release_conn()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the stream now (unblocks a read in progress) and join the thread."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
                (shutdown or response.close)()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


def _quiet_for(response: Any, seconds: float) -> None:
    """Let an open log stream stay quiet up to ``seconds`` (the request's read timeout only
    bounded the wait for the answer). urllib3 keeps the socket on ``_connection``; when a
    version does not, the stream ends after REQUEST_TIMEOUT of silence and the follower
    says so in its note."""
    sock = getattr(getattr(response, "_connection", None), "sock", None)
    if sock is None:  # http.client's reader on the same socket
        raw = getattr(getattr(getattr(response, "_fp", None), "fp", None), "raw", None)
        sock = getattr(raw, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(seconds)


# -- the pod target ------------------------------------------------------------------------
class KnativePod:
    """One Knative Service (and its revision pod) per test on a cluster; removed on exit."""

    def __init__(
        self,
        api: k8s.ApiClient,
        spec: KsvcSpec,
        *,
        namespaces: Namespaces,
        ingress_port: int,
        ready_timeout_s: float = READY_TIMEOUT_S,
        progress: Progress = _quiet,
        keep: bool = False,
        node_probe: NodeProbe | None = None,
    ) -> None:
        spec.check()
        self.api = api
        self.node_probe = node_probe
        self.nodes: set[str] = set()  # where the case's pods run: their failure is a fault
        self._api_down_since: float | None = None
        self.core = k8s.CoreV1Api(api)
        self.spec = spec
        self.namespaces = namespaces
        self.ingress_port = ingress_port
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

        wait_until(
            ready_or_hopeless,
            f"Knative Service {self.namespace}/{self.spec.name} Ready",
            timeout_s=self.ready_timeout_s,
            progress=self.progress,
            host=host_of(self.api),
        )
        self.name = self._find_pod()
        self.event("ready", f"pod {self.name}, host {self.host}")
        self.follow_logs()

    def _raise_if_hopeless(self) -> None:
        """ContainerStartError when a container of a revision pod cannot start (a failed
        pull, no command, it exited): one line now, not the Ready wait's 300 s. Knative's
        own status says so only after the Deployment's progress deadline (10 min)."""
        assert self.namespace is not None
        pods = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=f"{SERVICE_LABEL}={self.spec.name}",
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
                        + self._log_tail(pod.metadata.name, status.name)
                    )
                raise ContainerStartError(
                    f"pod {pod.metadata.name}: {status.name} cannot start: {why}", status.name
                )

    def _log_tail(self, pod: str, container: str, lines: int = 10) -> str:
        """``; log tail: ...`` of the container's previous run, or nothing."""
        assert self.namespace is not None
        try:
            text = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                previous=True,
                tail_lines=lines,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except API_ERRORS:
            return ""
        text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
        return f"; log tail: {text[-400:]}" if text else "; log empty"

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
            ready = [p for p in pods if _ready(p) and p.metadata.deletion_timestamp is None]
            if len(ready) < want:
                return (
                    f"{len(ready)}/{want} Ready pods with {SERVICE_LABEL}={self.spec.name} "
                    f"({len(pods)} pods)"
                )
            self._ready_pods = sorted(p.metadata.name for p in ready)
            self.nodes |= {p.spec.node_name for p in ready if p.spec and p.spec.node_name}
            found.append(self._ready_pods[0])
            return None

        wait_until(
            check,
            f"revision pod of {self.spec.name}",
            timeout_s=timeout_s,
            progress=self.progress,
            host=host_of(self.api),
        )
        return found[-1]

    @property
    def url(self) -> str:
        """The ingress (Kourier NodePort on kind) on loopback; the Host header picks the ksvc."""
        return f"http://127.0.0.1:{self.ingress_port}"

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
                if _unreachable(exc):  # the cluster failed, not our request
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
        awaited = self._awaited
        if awaited is None:  # scale-down, rollout: Knative decides which pods go
            t0 = self.termination.t0_mono

            def check() -> str | None:
                if self._deleted_since(t0):
                    return None
                self.raise_fault()
                return f"no pod with {SERVICE_LABEL}={self.spec.name} began terminating yet"

            wait_until(
                check,
                f"a pod of {self.namespace}/{self.spec.name} to terminate after the trigger",
                timeout_s=max(1.0, end - time.monotonic()),
                progress=self.progress,
                host=host_of(self.api),
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
                if e.pod in names
                and e.name.endswith(" exited")
                and e.detail.startswith(f"exit code {SIGKILL_EXIT}")
            }
        )
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
        fault = self._fault()
        if fault is not None:
            self.event("infrastructure fault", fault)
            raise InfrastructureError(f"{fault}; no verdict")

    def _fault(self) -> str | None:
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
                    return f"node {node} of pod {self.name} was deleted from the cluster"
                if not _unreachable(exc):
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
                    f"node {node} of pod {self.name} is not Ready: Ready={ready.status} "
                    f"{ready.reason or ''}: {' '.join((ready.message or '').split())[:200]}"
                )
        return None

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
