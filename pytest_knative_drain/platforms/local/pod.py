"""A Knative revision pod emulated on Docker, terminated the way kubelet does it.

One pod = a pause container that owns the network namespace (ports published
on 127.0.0.1 only), the user container and the REAL queue-proxy joined to it,
with queue-proxy's environment as Knative's revision reconciler sets it
(pkg/reconciler/revision/resources/queue.go). Deletion follows kubelet:
at t0 SIGTERM to queue-proxy and, in parallel, the user container's preStop
``GET :8022/wait-for-drain``; when it returns, SIGTERM to the app with the rest
of the grace period (at least 2 s, kubelet's minimum); SIGKILL whatever still
runs when its grace ends. Grace = the revision's timeoutSeconds (deploy.go).

A pod whose container is removed by someone else, or whose Docker engine goes away
(dockerd stopped or restarted), mid-case ends with :class:`InfrastructureError` from
``wait_gone``: seen where it happens (a Docker events watch, NotFound or a lost
connection on kill/wait/inspect), never judged as the app's draining.

This module owns the pod's containers, its timeline and its faults; the termination
sequence is kubelet.py (a deletion, or a restart of the user container), the engine's
exit times and removals containers.py, the platform that makes pods platform.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

from ...knative import internal_tls, queue_env
from ...matrix.scenarios import Trigger
from ..pod import InfrastructureError, PodEvent, Termination
from .containers import engine_time, remove_container
from .kubelet import DRAIN_PATH, QUEUE_ADMIN_PORT, Kubelet
from .kubelet import error_line as _line

QUEUE_SERVING_PORT = 8012
QUEUE_SERVING_TLS_PORT = 8112  # networking.BackendHTTPSPort
QUEUE_METRICS_PORT = 9090
USER_PORT = 8080
PROBE_HEADER = ("K-Network-Probe", "queue")  # how kubelet probes queue-proxy readiness
#: kubelet's own User-Agent on an httpGet probe (k8s.io/kubernetes pkg/probe/http/request.go:
#: "kube-probe/<major>.<minor>"): queue-proxy answers a kubelet probe itself, with its
#: readiness probe of the app (a TCP connect by default), instead of proxying it to the app
KUBELET_USER_AGENT = "kube-probe/1.31"
LABEL = "knative-drain.run"  # every container we create carries it, for sweeping
READY_TIMEOUT_S = 60.0  # how long a pod may take to answer queue-proxy's readiness probe
#: how long a restarted user container may take to be Ready again (kubelet's probe through
#: queue-proxy answered 200) before the restart is recorded as "not ready again"
READY_AGAIN_TIMEOUT_S = 60.0
REMOVE_RETRY_S = 30.0  # how long removal waits for an engine that is restarting


class LocalPlatformError(RuntimeError):
    """The emulated pod could not be created or never became ready."""


class PodStartError(LocalPlatformError):
    """One container of the pod (``role``) could not be created or did not get ready."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(message)
        self.role = role


@dataclass(frozen=True)
class RevisionSpec:
    """What the reconciler derives from a Knative Service for one revision."""

    service: str = "drain"
    revision: str = "drain-00001"
    namespace: str = "knative-drain"
    timeout_seconds: int = 300
    container_concurrency: int = 0
    response_start_timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    user_port: int = USER_PORT
    knative_version: str = "1.14"  # whose queue-proxy environment to write

    def queue_proxy_env(self, pod: str, pod_ip: str = "") -> dict[str, str]:
        """queue-proxy's environment, as ``knative_version``'s makeQueueContainer writes it."""
        return queue_env.queue_proxy_env(
            self.knative_version,
            namespace=self.namespace,
            service=self.service,
            revision=self.revision,
            pod=pod,
            pod_ip=pod_ip,
            serving_port=QUEUE_SERVING_PORT,
            tls_port=QUEUE_SERVING_TLS_PORT,
            user_port=self.user_port,
            timeout_seconds=self.timeout_seconds,
            response_start_timeout_seconds=self.response_start_timeout_seconds,
            idle_timeout_seconds=self.idle_timeout_seconds,
            container_concurrency=self.container_concurrency,
        )


class LocalPod:
    """One emulated revision pod. Use as a context manager: removed on exit."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        app_image: str,
        queue_proxy_image: str,
        pause_image: str,
        revision: RevisionSpec,
        run_id: str,
        name: str | None = None,
        app_env: dict[str, str] | None = None,
        keep: bool = False,
        certs: internal_tls.CertDir | None = None,
    ) -> None:
        """``certs``: Knative's internal TLS is on: queue-proxy gets them mounted read-only
        at /var/lib/knative/certs and requests go to its TLS port, as the activator sends
        them (``url`` is https://, ``tls`` how to trust it)."""
        self.client = client
        self.app_image = app_image
        self.queue_proxy_image = queue_proxy_image
        self.pause_image = pause_image
        self.revision = revision
        self.run_id = run_id
        self.name = name or f"{revision.revision}-deployment-{uuid.uuid4().hex[:5]}"
        self.app_env = app_env or {}
        self.keep = keep
        self.certs = certs
        self.tls = certs.bundle.client() if certs is not None else None
        self.events: list[PodEvent] = []
        self.termination: Termination | None = None
        self.logs: dict[str, str] = {}
        self._containers: dict[str, Container] = {}
        self._ports: dict[int, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.fault: str | None = None  # the first way the platform failed under the pod
        self._closing = False  # our own removal: its events and errors are no fault
        self._watcher: threading.Thread | None = None
        self._event_stream: Any = None
        self._user_run: dict[str, Any] = {}  # how the user container was created
        self._retired: list[Container] = []  # user containers a restart replaced
        self.restarts = 0
        self.restarting = False  # the trigger restarts the user container: the pod stays

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LocalPod:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def event(self, name: str, detail: str = "", ago_s: float = 0.0) -> PodEvent:
        """Record ``name`` now, or ``ago_s`` seconds ago (kept in time order)."""
        ev = PodEvent(self.name, name, time.monotonic() - ago_s, time.time() - ago_s, detail)
        with self._lock:
            at = len(self.events)
            while at and self.events[at - 1].mono > ev.mono:
                at -= 1
            self.events.insert(at, ev)
        return ev

    def _exited(self, role: str, detail: str, since_mono: float) -> None:
        """'<role> exited' at the engine's own exit time (State.FinishedAt), not when its
        wait answered: a busy dockerd answers seconds late (62 pods at once: 5 s), and the
        verdict reads cuts against this timeline. Never before ``since_mono`` (the wait's
        start: clocks of a remote engine may differ), nor in the future."""
        ago = 0.0
        with contextlib.suppress(Exception):  # no FinishedAt: the answer's time stands
            container = self._containers[role]
            container.reload()
            finished = engine_time(container.attrs["State"]["FinishedAt"])
            if finished is not None:
                ago = min(max(time.time() - finished, 0.0), time.monotonic() - since_mono)
        self.event(f"{role} exited", detail, ago_s=max(ago, 0.0))

    def _run(self, role: str, image: str, suffix: str = "", **kwargs: Any) -> Container:
        labels = {
            LABEL: self.run_id,
            "knative-drain.pod": self.name,
            "knative-drain.role": role,
            "knative-drain.owner-pid": str(os.getpid()),
        }
        try:
            container = self.client.containers.create(
                image, name=f"{self.name}-{role}{suffix}", labels=labels, **kwargs
            )
        except docker.errors.ImageNotFound:
            raise PodStartError(
                role,
                f"{role}: image {image} is not on this Docker engine (docker pull or build it)",
            ) from None
        except docker.errors.APIError as exc:  # e.g. 400 "No command specified"
            raise PodStartError(
                role,
                f"{role}: Docker cannot create a container of {image}: "
                f"{exc.explanation or exc} (HTTP {exc.status_code})",
            ) from None
        self._containers[role] = container  # registered before start: removed even if it fails
        try:
            container.start()
        except docker.errors.APIError as exc:  # e.g. the command is not in the image
            raise PodStartError(
                role, f"{role}: Docker cannot start {image}: {exc.explanation or exc}"
            ) from None
        return container

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        """Create the pod and wait until queue-proxy reports ready to a kubelet-style probe."""
        try:
            self._start(ready_timeout_s)
        except requests.exceptions.ConnectionError as exc:
            raise InfrastructureError(
                self._fault(f"Docker engine unreachable while starting the pod: {_line(exc)}")
            ) from None

    def _start(self, ready_timeout_s: float) -> None:
        self.event("scheduled")
        self._watch_engine()
        published = (QUEUE_SERVING_PORT, QUEUE_ADMIN_PORT)
        if self.certs is not None:
            published += (QUEUE_SERVING_TLS_PORT,)
        ports = {f"{p}/tcp": ("127.0.0.1", None) for p in published}
        pause = self._run(
            "pause",
            self.pause_image,
            command=["sleep", "infinity"],
            ports=ports,
            hostname=self.name,
        )
        pause.reload()
        pod_ip = pause.attrs["NetworkSettings"]["IPAddress"]
        for port in published:
            self._ports[port] = int(pause.ports[f"{port}/tcp"][0]["HostPort"])
        netns = f"container:{pause.id}"
        app_env = {
            "PORT": str(self.revision.user_port),
            "K_REVISION": self.revision.revision,
            "K_SERVICE": self.revision.service,
            "K_CONFIGURATION": self.revision.service,
            "POD_NAME": self.name,
            **self.app_env,
        }
        self._user_run = {"network_mode": netns, "environment": app_env}
        self._run("user-container", self.app_image, **self._user_run)
        self.event("started user-container", self.app_image)
        self._run(
            "queue-proxy",
            self.queue_proxy_image,
            network_mode=netns,
            environment=self.revision.queue_proxy_env(self.name, pod_ip),
            volumes=self.certs.volume() if self.certs is not None else None,
        )
        self.event("started queue-proxy", self.queue_proxy_image)
        try:
            self._wait_ready(ready_timeout_s)
        except RetryError as exc:
            self.collect_logs()
            raise PodStartError(
                "user-container",
                f"pod {self.name} never became ready within {ready_timeout_s:.0f} s "
                f"(queue-proxy probe on 127.0.0.1:{self.url_port}); last error: "
                f"{exc.last_attempt.exception()}; queue-proxy log tail: "
                f"{self.logs.get('queue-proxy', '')[-500:]!r}; app log tail: "
                f"{self.logs.get('user-container', '')[-500:]!r}",
            ) from None
        self.event("ready")

    def _wait_ready(self, timeout_s: float) -> None:
        @retry(
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(0.25),
            retry=retry_if_exception_type(OSError),
        )
        def probe() -> None:
            for role, c in self._containers.items():
                self._reload(role)
                if c.status == "exited":
                    raise PodStartError(
                        role, f"{role} exited before the pod became ready: {self.state(role)}"
                    )
            # kubelet probes queue-proxy's plain HTTP port, internal TLS or not
            probe_url = f"http://127.0.0.1:{self._ports[QUEUE_SERVING_PORT]}/"
            headers = dict([PROBE_HEADER, ("User-Agent", KUBELET_USER_AGENT)])
            request = urllib.request.Request(probe_url, headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status != 200:
                    raise OSError(f"probe answered {response.status}")

        probe()

    def _reload(self, role: str) -> None:
        """Refresh a container's state; one that vanished or an engine that is gone is an
        :class:`InfrastructureError` (recorded as the pod's fault)."""
        try:
            self._containers[role].reload()
        except docker.errors.NotFound:
            raise InfrastructureError(
                self._fault(f"{role} container removed by someone else")
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise InfrastructureError(
                self._fault(f"Docker engine unreachable: {_line(exc)}")
            ) from None

    def state(self, role: str, tail: int = 300) -> str:
        """``role``'s state in one line: running, or its exit code, then its log tail."""
        container = self._containers.get(role)
        if container is None:
            return f"{role} was never created"
        try:
            container.reload()
            code = container.attrs.get("State", {}).get("ExitCode")
            logs = container.logs(tail=20).decode(errors="replace")
        except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:
            return f"{role} state unknown ({_line(exc)})"
        how = "running" if container.status == "running" else f"exit code {code}"
        return f"{how}, log tail {logs.strip()[-tail:]!r}"

    def _fault(self, what: str) -> str:
        """Record the first way the platform failed under this pod (unless we are removing it)."""
        with self._lock:
            first = self.fault is None and not self._closing
            if first:
                self.fault = what
        if first:
            self.event("infrastructure fault", what)
        return what

    def _watch_engine(self) -> None:
        """Follow Docker's events for this pod from before its first container: a container
        destroyed by anyone but us, or the event stream ending (dockerd stopped or
        restarted), is a fault."""
        self._event_stream = self.client.events(
            decode=True,
            filters={
                "type": "container",
                "event": "destroy",
                "label": f"knative-drain.pod={self.name}",
            },
        )

        def watch() -> None:
            try:
                for ev in self._event_stream:
                    role = ev.get("Actor", {}).get("Attributes", {}).get("knative-drain.role", "?")
                    self._fault(f"{role} container removed by someone else")
            except Exception as exc:  # noqa: BLE001 - closed by us, or the engine went away
                self._fault(f"Docker engine connection lost: {_line(exc)}")
                return
            self._fault("Docker engine's event stream ended (dockerd stopped or restarted?)")

        self._watcher = threading.Thread(
            target=watch, name=f"docker-events-{self.name}", daemon=True
        )
        self._watcher.start()

    def _stop_watching(self) -> None:
        self._closing = True
        if self._event_stream is not None:
            with contextlib.suppress(Exception):
                self._event_stream.close()
        if self._watcher is not None:
            self._watcher.join(5)

    @property
    def url_port(self) -> int:
        return self._ports[QUEUE_SERVING_PORT]

    @property
    def url(self) -> str:
        """Where requests for this pod go: queue-proxy's serving port on loopback (its TLS
        port under internal TLS)."""
        if self.certs is not None:
            return f"https://127.0.0.1:{self._ports[QUEUE_SERVING_TLS_PORT]}"
        return f"http://127.0.0.1:{self._ports[QUEUE_SERVING_PORT]}"

    # -- deletion and restarts, as kubelet does them -----------------------------------------
    def trigger(self, trigger: Trigger) -> Termination:
        """The triggers a pod without a cluster has: its deletion, its app's restart."""
        if trigger.name == "container-restart":
            return self.restart_user_container(trigger.grace_s)
        if trigger.name != "pod-delete":
            raise LocalPlatformError(
                f"trigger {trigger.name!r} needs a cluster (--platform=kind or existing)"
            )
        return self.delete(trigger.grace_s)

    def restart_user_container(self, grace_s: float | None = None) -> Termination:
        """Start restarting the user container as kubelet does after its liveness probe
        failed, and return at once; ``wait_gone`` waits until it is Ready again (or not).

        The grace period is the pod's (timeoutSeconds), as kubelet's killContainer takes it
        when the probe sets none. The new container is a new one, as kubelet's is (the old
        one is kept, stopped, for its logs)."""
        grace = float(self.revision.timeout_seconds if grace_s is None else grace_s)
        t0 = self.event(
            "liveness restart",
            f"user-container; terminationGracePeriodSeconds={grace:g}; queue-proxy stays",
        )
        self.termination = Termination(t0_mono=t0.mono, grace_s=grace, pods=[self.name])
        self.restarting = True
        self._threads.append(
            self._kubelet().restart_user_container(self.termination, self._start_user_again)
        )
        return self.termination

    def _start_user_again(self) -> None:
        """The restart's new user container, then kubelet's readiness probe until Ready."""
        old = self._containers.get("user-container")
        if old is None or self.fault is not None:
            return
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.ConnectionError):
            self.logs["user-container (before restart)"] = old.logs(tail=400).decode(
                errors="replace"
            )
        self.restarts += 1
        try:
            suffix = f"-restart-{self.restarts}"
            self._run("user-container", self.app_image, suffix, **self._user_run)
        except PodStartError as exc:
            self.event("not ready again", str(exc))
            return
        except requests.exceptions.ConnectionError as exc:
            self._fault(f"Docker engine unreachable restarting user-container: {_line(exc)}")
            return
        finally:
            self._retired.append(old)  # _run registered the new one in its place
        self.event("started user-container", f"{self.app_image} (restart {self.restarts})")
        try:
            self._wait_ready(READY_AGAIN_TIMEOUT_S)
        except RetryError as exc:
            self.event(
                "not ready again",
                f"no 200 to kubelet's probe within {READY_AGAIN_TIMEOUT_S:.0f} s: "
                f"{exc.last_attempt.exception()}",
            )
        except PodStartError as exc:
            self.event("not ready again", str(exc))
        except InfrastructureError:
            return  # the pod's fault is recorded: wait_gone raises it
        else:
            self.event("ready again", "kubelet's probe through queue-proxy: 200")

    def _kubelet(self) -> Kubelet:
        return Kubelet(
            self._containers,
            f"http://127.0.0.1:{self._ports[QUEUE_ADMIN_PORT]}{DRAIN_PATH}",
            event=self.event,
            fault=self._fault,
            exited=self._exited,
        )

    def delete(self, grace_s: float | None = None) -> Termination:
        """Start deleting the pod and return at once; ``wait_gone`` waits for the end."""
        grace = float(self.revision.timeout_seconds if grace_s is None else grace_s)
        t0 = self.event("delete", f"terminationGracePeriodSeconds={grace:g}")
        self.termination = Termination(t0_mono=t0.mono, grace_s=grace, pods=[self.name])
        self._threads += self._kubelet().kill_pod(self.termination)
        return self.termination

    def wait_gone(self, timeout_s: float | None = None) -> Termination:
        """Block until every container has exited, or a restarted one is Ready again or
        given up on (or raise after ``timeout_s``)."""
        if self.termination is None:
            raise LocalPlatformError(f"pod {self.name} was never deleted")
        limit = timeout_s if timeout_s is not None else self.termination.grace_s + 60
        limit += READY_AGAIN_TIMEOUT_S if self.restarting else 0
        end = time.monotonic() + limit
        # a fault ends the wait at once: removal then unblocks the kubelet threads
        while self.fault is None and any(t.is_alive() for t in self._threads):
            if time.monotonic() >= end:
                raise LocalPlatformError(f"pod {self.name} still terminating after {limit:.0f} s")
            time.sleep(0.1)
        self._check_intact()
        self.termination.gone_mono = max(e.mono for e in self.events if e.name.endswith(" exited"))
        if not self.restarting:  # a restart's pod stays: its end is "ready again", or not
            self.event("gone", f"{self.termination.gone_after_s:.1f} s after delete")
        return self.termination

    def _check_intact(self) -> None:
        """Raise the pod's fault, if any: every container must still exist (ours to remove)
        and the pause container, which holds the ports, must still run."""
        if self.fault is None:
            with contextlib.suppress(InfrastructureError):
                for role in list(self._containers):
                    self._reload(role)
                pause = self._containers.get("pause")
                if pause is not None and pause.status != "running":
                    self._fault(f"pause container {pause.status} by someone else (ports gone)")
        if self.fault is not None:
            raise InfrastructureError(f"pod {self.name}: {self.fault}; no verdict")

    # -- evidence and cleanup -----------------------------------------------------------------
    def collect_logs(self, tail: int = 400) -> dict[str, str]:
        for role in ("queue-proxy", "user-container"):
            container = self._containers.get(role)
            if container is not None:
                with contextlib.suppress(
                    docker.errors.APIError, requests.exceptions.ConnectionError
                ):
                    self.logs[role] = container.logs(tail=tail).decode(errors="replace")
        return self.logs

    def remove(self) -> None:
        """Remove every container of the pod (unless kept), pause container last.

        An engine that is restarting gets ``REMOVE_RETRY_S``; one still gone after that
        leaves the containers to the platform's sweep (they carry the run label).
        """
        self._stop_watching()
        self.collect_logs()
        if self.keep:
            return
        deadline = time.monotonic() + REMOVE_RETRY_S  # one budget for the pod, not each
        doomed = [self._containers.pop(r, None) for r in ("queue-proxy", "user-container")]
        doomed += [*self._retired, self._containers.pop("pause", None)]
        self._retired = []
        for container in doomed:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError, RetryError):
                    remove_container(container, deadline)
