"""A Knative revision pod emulated on Docker, terminated the way kubelet does it.

One pod = a pause container that owns the network namespace (ports published
on 127.0.0.1 only), the user container and the REAL queue-proxy joined to it,
with queue-proxy's environment as Knative's revision reconciler sets it
(pkg/reconciler/revision/resources/queue.go). Deletion follows kubelet:
at t0 SIGTERM to queue-proxy and, in parallel, the user container's preStop
``GET :8022/wait-for-drain``; when it returns, SIGTERM to the app with the rest
of the grace period (at least 2 s, kubelet's minimum); SIGKILL whatever still
runs when its grace ends. Grace = the revision's timeoutSeconds (deploy.go).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from ..catalog import Release
from ..scenarios import KnativeConfig, Scenario, Trigger
from .pod import PodEvent, Termination

QUEUE_SERVING_PORT = 8012
QUEUE_ADMIN_PORT = 8022  # networking.QueueAdminPort
QUEUE_METRICS_PORT = 9090
USER_PORT = 8080
DRAIN_PATH = "/wait-for-drain"  # queue.RequestQueueDrainPath
KUBELET_MIN_GRACE_S = 2.0  # kubelet's minimumGracePeriodInSeconds after a preStop
PROBE_HEADER = ("K-Network-Probe", "queue")  # how kubelet probes queue-proxy readiness
LABEL = "knative-drain.run"  # every container we create carries it, for sweeping
# the docker SDK's container.wait(timeout=...) times out with requests' exceptions
_WAIT_TIMEOUT = (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)


class LocalPlatformError(RuntimeError):
    """The emulated pod could not be created or never became ready."""


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

    def queue_proxy_env(self, pod: str, pod_ip: str = "") -> dict[str, str]:
        """queue-proxy's environment, as makeQueueContainer writes it."""
        probe = {"tcpSocket": {"port": self.user_port, "host": "127.0.0.1"}, "successThreshold": 1}
        return {
            "SERVING_NAMESPACE": self.namespace,
            "SERVING_SERVICE": self.service,
            "SERVING_CONFIGURATION": self.service,
            "SERVING_REVISION": self.revision,
            "QUEUE_SERVING_PORT": str(QUEUE_SERVING_PORT),
            "QUEUE_SERVING_TLS_PORT": "8112",
            "CONTAINER_CONCURRENCY": str(self.container_concurrency),
            "REVISION_TIMEOUT_SECONDS": str(self.timeout_seconds),
            "REVISION_RESPONSE_START_TIMEOUT_SECONDS": str(self.response_start_timeout_seconds),
            "REVISION_IDLE_TIMEOUT_SECONDS": str(self.idle_timeout_seconds),
            "SERVING_POD": pod,
            "SERVING_POD_IP": pod_ip,
            "SERVING_LOGGING_CONFIG": "",
            "SERVING_LOGGING_LEVEL": "info",
            "SERVING_REQUEST_LOG_TEMPLATE": "",
            "SERVING_ENABLE_REQUEST_LOG": "false",
            "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
            "TRACING_CONFIG_BACKEND": "none",
            "TRACING_CONFIG_ZIPKIN_ENDPOINT": "",
            "TRACING_CONFIG_DEBUG": "false",
            "TRACING_CONFIG_SAMPLE_RATE": "0.1",
            "USER_PORT": str(self.user_port),
            "SYSTEM_NAMESPACE": "knative-serving",
            "METRICS_DOMAIN": "knative.dev/internal/serving",
            "SERVING_READINESS_PROBE": json.dumps(probe, separators=(",", ":")),
            "ENABLE_PROFILING": "false",
            "SERVING_ENABLE_PROBE_REQUEST_LOG": "false",
            "METRICS_COLLECTOR_ADDRESS": "",
            "ENABLE_HTTP2_AUTO_DETECTION": "false",
            "ENABLE_HTTP_FULL_DUPLEX": "false",
            "ROOT_CA": "",
            "ENABLE_MULTI_CONTAINER_PROBES": "false",
        }


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
    ) -> None:
        self.client = client
        self.app_image = app_image
        self.queue_proxy_image = queue_proxy_image
        self.pause_image = pause_image
        self.revision = revision
        self.run_id = run_id
        self.name = name or f"{revision.revision}-deployment-{uuid.uuid4().hex[:5]}"
        self.app_env = app_env or {}
        self.keep = keep
        self.events: list[PodEvent] = []
        self.termination: Termination | None = None
        self.logs: dict[str, str] = {}
        self._containers: dict[str, Container] = {}
        self._ports: dict[int, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

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

    def event(self, name: str, detail: str = "") -> PodEvent:
        ev = PodEvent(self.name, name, time.monotonic(), time.time(), detail)
        with self._lock:
            self.events.append(ev)
        return ev

    def _run(self, role: str, image: str, **kwargs: Any) -> Container:
        labels = {
            LABEL: self.run_id,
            "knative-drain.pod": self.name,
            "knative-drain.role": role,
            "knative-drain.owner-pid": str(os.getpid()),
        }
        container = self.client.containers.create(
            image, name=f"{self.name}-{role}", labels=labels, **kwargs
        )
        self._containers[role] = container  # registered before start: removed even if it fails
        container.start()
        return container

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Create the pod and wait until queue-proxy reports ready to a kubelet-style probe."""
        self.event("scheduled")
        ports = {f"{p}/tcp": ("127.0.0.1", None) for p in (QUEUE_SERVING_PORT, QUEUE_ADMIN_PORT)}
        pause = self._run(
            "pause",
            self.pause_image,
            command=["sleep", "infinity"],
            ports=ports,
            hostname=self.name,
        )
        pause.reload()
        pod_ip = pause.attrs["NetworkSettings"]["IPAddress"]
        for port in (QUEUE_SERVING_PORT, QUEUE_ADMIN_PORT):
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
        self._run("user-container", self.app_image, network_mode=netns, environment=app_env)
        self.event("started user-container", self.app_image)
        self._run(
            "queue-proxy",
            self.queue_proxy_image,
            network_mode=netns,
            environment=self.revision.queue_proxy_env(self.name, pod_ip),
        )
        self.event("started queue-proxy", self.queue_proxy_image)
        try:
            self._wait_ready(ready_timeout_s)
        except RetryError as exc:
            self.collect_logs()
            raise LocalPlatformError(
                f"pod {self.name} never became ready within {ready_timeout_s:.0f} s "
                f"(queue-proxy probe on 127.0.0.1:{self.url_port}); last error: "
                f"{exc.last_attempt.exception()}; queue-proxy log tail: "
                f"{self.logs.get('queue-proxy', '')[-500:]!r}; app log tail: "
                f"{self.logs.get('user-container', '')[-500:]!r}"
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
                c.reload()
                if c.status == "exited":
                    raise LocalPlatformError(f"{role} exited before the pod became ready")
            request = urllib.request.Request(self.url + "/", headers=dict([PROBE_HEADER]))
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status != 200:
                    raise OSError(f"probe answered {response.status}")

        probe()

    @property
    def url_port(self) -> int:
        return self._ports[QUEUE_SERVING_PORT]

    @property
    def url(self) -> str:
        """Where requests for this pod go: queue-proxy's serving port on loopback."""
        return f"http://127.0.0.1:{self._ports[QUEUE_SERVING_PORT]}"

    # -- deletion, as kubelet does it --------------------------------------------------------
    def trigger(self, trigger: Trigger) -> Termination:
        """The one trigger a pod without a cluster has: its deletion."""
        if trigger.name != "pod-delete":
            raise LocalPlatformError(
                f"trigger {trigger.name!r} needs a cluster (--platform=kind or existing)"
            )
        return self.delete(trigger.grace_s)

    def delete(self, grace_s: float | None = None) -> Termination:
        """Start deleting the pod and return at once; ``wait_gone`` waits for the end."""
        grace = float(self.revision.timeout_seconds if grace_s is None else grace_s)
        t0 = self.event("delete", f"terminationGracePeriodSeconds={grace:g}")
        self.termination = Termination(t0_mono=t0.mono, grace_s=grace, pods=[self.name])
        for role, target in (
            ("queue-proxy", self._stop_queue_proxy),
            ("user-container", self._stop_user_container),
        ):
            thread = threading.Thread(
                target=target, args=(t0.mono, grace), name=f"kubelet-{role}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self.termination

    def _stop_queue_proxy(self, t0: float, grace: float) -> None:
        self._signal("queue-proxy", "SIGTERM")
        self._wait_or_kill("queue-proxy", t0 + grace)

    def _stop_user_container(self, t0: float, grace: float) -> None:
        self.event("preStop started", f"GET :{QUEUE_ADMIN_PORT}{DRAIN_PATH}")
        status: int | None = None
        url = f"http://127.0.0.1:{self._ports[QUEUE_ADMIN_PORT]}{DRAIN_PATH}"
        try:
            with urllib.request.urlopen(url, timeout=max(grace, 1.0)) as response:  # noqa: S310
                status = response.status
            self.event("preStop returned", f"status {status}")
        except urllib.error.HTTPError as exc:
            status = exc.code
            self.event("preStop returned", f"status {status}")
        except OSError as exc:  # kubelet logs FailedPreStopHook and goes on
            self.event("preStop failed", str(exc))
        assert self.termination is not None
        self.termination.prestop_s = time.monotonic() - t0
        self.termination.prestop_status = status
        remaining = max(t0 + grace - time.monotonic(), KUBELET_MIN_GRACE_S)
        self._signal("user-container", "SIGTERM")
        self._wait_or_kill("user-container", time.monotonic() + remaining)

    def _signal(self, role: str, signal: str) -> None:
        self.event(f"{signal} {role}")
        with contextlib.suppress(docker.errors.APIError):  # already exited
            self._containers[role].kill(signal=signal)

    def _wait_or_kill(self, role: str, deadline: float) -> None:
        container = self._containers[role]
        try:
            result = container.wait(timeout=max(deadline - time.monotonic(), 0.01))
            self.event(f"{role} exited", f"exit code {result.get('StatusCode')}")
            return
        except _WAIT_TIMEOUT:  # the docker SDK's wait timeout is requests' read timeout
            pass
        except docker.errors.APIError as exc:  # removed under us (run aborted)
            self.event(f"{role} exited", f"container gone: {exc}")
            return
        self._signal(role, "SIGKILL")
        assert self.termination is not None
        self.termination.killed.append(role)
        try:
            result = container.wait(timeout=30)
        except (*_WAIT_TIMEOUT, docker.errors.APIError) as exc:
            self.event(f"{role} exited", f"not confirmed after SIGKILL: {exc}")
            return
        self.event(f"{role} exited", f"exit code {result.get('StatusCode')} after SIGKILL")

    def wait_gone(self, timeout_s: float | None = None) -> Termination:
        """Block until every container has exited (or raise after ``timeout_s``)."""
        if self.termination is None:
            raise LocalPlatformError(f"pod {self.name} was never deleted")
        limit = timeout_s if timeout_s is not None else self.termination.grace_s + 60
        end = time.monotonic() + limit
        for thread in self._threads:
            thread.join(max(end - time.monotonic(), 0))
            if thread.is_alive():
                raise LocalPlatformError(f"pod {self.name} still terminating after {limit:.0f} s")
        self.termination.gone_mono = max(e.mono for e in self.events if e.name.endswith(" exited"))
        self.event("gone", f"{self.termination.gone_after_s:.1f} s after delete")
        return self.termination

    # -- evidence and cleanup -----------------------------------------------------------------
    def collect_logs(self, tail: int = 400) -> dict[str, str]:
        for role in ("queue-proxy", "user-container"):
            container = self._containers.get(role)
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    self.logs[role] = container.logs(tail=tail).decode(errors="replace")
        return self.logs

    def remove(self) -> None:
        """Remove every container of the pod (unless kept), pause container last."""
        self.collect_logs()
        if self.keep:
            return
        for role in ("queue-proxy", "user-container", "pause"):
            container = self._containers.pop(role, None)
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)


def sweep(client: docker.DockerClient, run_id: str | None = None) -> int:
    """Remove containers of this run, or of runs whose owning process is gone."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        labels = container.labels
        owner = labels.get("knative-drain.owner-pid", "")
        stale = owner.isdigit() and not _pid_alive(int(owner))
        if (run_id is not None and labels.get(LABEL) == run_id) or stale:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
                removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalPlatform:
    """The Docker host of the emulated pods: images provisioned once, pods made on demand."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        queue_proxy_image: str,
        pause_image: str,
        app_images: dict[str, str],
        run_id: str,
        keep: bool = False,
        facts: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.queue_proxy_image = queue_proxy_image
        self.pause_image = pause_image
        self.app_images = app_images
        self.run_id = run_id
        self.keep = keep
        self.facts = facts or {}
        sweep(client)  # containers left by runs that died (their owner process is gone)

    @classmethod
    def provision(
        cls,
        release: Release,
        *,
        apps: list[str],
        run_id: str,
        keep: bool = False,
        progress: Callable[[str], None] = print,
    ) -> LocalPlatform:
        """Engine, base, queue-proxy and app images for ``release`` (cached), then the platform."""
        from .. import images, manifests

        release_image, why = manifests.release_queue_proxy_image(release)
        progress(f"release queue-proxy image: {release_image or 'not known'} ({why})")
        result = images.provision_local(
            release.version,
            release.go_module_version,
            apps=apps,
            release_image=release_image,
            progress=progress,
        )
        return cls(
            images.docker_client(),
            queue_proxy_image=result.queue_proxy_image,
            pause_image=result.base_image,
            app_images=dict(result.app_images),
            run_id=run_id,
            keep=keep,
            facts={
                "knative_version": release.version,
                "ingress": "none (direct to queue-proxy)",
                **result.describe(),
            },
        )

    def describe(self) -> dict[str, Any]:
        return {
            "platform": "local",
            "queue_proxy_image": self.queue_proxy_image,
            "app_images": self.app_images,
            **self.facts,
        }

    def configure(self, config: KnativeConfig, scenario: Scenario) -> contextlib.nullcontext:
        """Nothing cluster-wide exists here; a config that needs it cannot run locally."""
        if config.changes_cluster() or scenario.activator_replicas:
            raise LocalPlatformError(
                f"Knative config {config.name!r} / scenario {scenario.name!r} change the "
                "cluster's Knative configuration: they need --platform=kind or existing"
            )
        return contextlib.nullcontext()

    def pod(
        self,
        app: str,
        image: str | None,
        timeout_seconds: int,
        *,
        scale: int = 1,
        max_scale: int | None = None,
        target_burst_capacity: int | None = None,
        annotations: dict[str, str] | None = None,
    ) -> LocalPod:
        """A not-yet-started pod of ``app`` (a fixture app name, or ``image`` for the user's).

        One pod, no autoscaler, no activator: only ``scale=1`` and no other revision knobs.
        """
        if scale != 1 or max_scale not in (None, 1) or target_burst_capacity or annotations:
            raise LocalPlatformError(
                f"the local platform runs one pod without autoscaler or activator (scale={scale}, "
                f"max_scale={max_scale}, target_burst_capacity={target_burst_capacity}, "
                f"annotations={annotations}): use a cluster platform"
            )
        app_image = image or self.app_images[app]
        revision = RevisionSpec(
            service=app, revision=f"{app}-00001", timeout_seconds=timeout_seconds
        )
        return LocalPod(
            self.client,
            app_image=app_image,
            queue_proxy_image=self.queue_proxy_image,
            pause_image=self.pause_image,
            revision=revision,
            run_id=self.run_id,
            keep=self.keep,
        )

    def close(self) -> None:
        if not self.keep:
            sweep(self.client, self.run_id)
