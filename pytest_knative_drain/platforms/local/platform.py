"""The local platform: the Docker host of the emulated pods, images provisioned once, pods
made on demand, and the sweep that removes what a run (or a dead run) left behind."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors

from ...knative import internal_tls
from ...knative.catalog import Release
from ...matrix.configs import KnativeConfig
from ...matrix.scenarios import Scenario
from ..pod import app_protocol_env
from .pod import LABEL, LocalPlatformError, LocalPod, RevisionSpec


def sweep(client: docker.DockerClient, run_id: str | None = None) -> int:
    """Remove containers of this run, or of runs whose owning process is gone."""
    removed = 0
    # the low-level list: containers.list() inspects each one, and one removed by another
    # process between the list and its inspect raised NotFound out of a platform's start
    for container in client.api.containers(all=True, filters={"label": LABEL}):
        labels = container.get("Labels") or {}
        owner = labels.get("knative-drain.owner-pid", "")
        stale = owner.isdigit() and not _pid_alive(int(owner))
        if (run_id is not None and labels.get(LABEL) == run_id) or stale:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(container["Id"], force=True, v=True)
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
        self.knative_version = str(self.facts.get("knative_version", "1.14"))
        self._certs: internal_tls.CertDir | None = None  # internal-tls, made when first used
        # internal-tls is on for the case running in this thread (cases run concurrently)
        self._tls_cases = threading.local()
        self._certs_lock = threading.Lock()
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
        from ...builders import images
        from ...knative import manifests

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

    def configure(
        self, config: KnativeConfig, scenario: Scenario
    ) -> contextlib.AbstractContextManager[None]:
        """Nothing cluster-wide exists here; a config that needs it cannot run locally.
        ``internal-tls`` is per pod: the pods made inside get Knative's certificates."""
        if config.changes_cluster() or scenario.activator_replicas:
            raise LocalPlatformError(
                f"Knative config {config.name!r} / scenario {scenario.name!r} change the "
                "cluster's Knative configuration: they need --platform=kind or existing"
            )
        if config.name == internal_tls.CONFIG:
            return self._internal_tls()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _internal_tls(self) -> Iterator[None]:
        """Pods made meanwhile mount the namespace's serving certificate (one CA and one
        certificate per platform, as Knative makes one Secret per namespace)."""
        version = str(self.facts.get("knative_version", "1.14"))
        why_not = internal_tls.unsupported(version)
        if why_not is not None:
            raise LocalPlatformError(why_not)
        with self._certs_lock:
            if self._certs is None:
                issued = internal_tls.issue(RevisionSpec.namespace)
                self._certs = internal_tls.CertDir(issued, version)
        self._tls_cases.on = True
        try:
            yield
        finally:
            self._tls_cases.on = False

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
        response_start_timeout_seconds: int | None = None,
        idle_timeout_seconds: int | None = None,
        protocol: str = "http1",
        container_concurrency: int = 0,
        liveness_probe: bool = False,
    ) -> LocalPod:
        """A not-yet-started pod of ``app`` (a fixture app name, or ``image`` for the user's).

        One pod, no autoscaler, no activator: only ``scale=1`` and no other revision knobs.
        No liveness probe runs here: a container restart is the trigger's, done at once.
        """
        del liveness_probe
        if scale != 1 or max_scale not in (None, 1) or target_burst_capacity or annotations:
            raise LocalPlatformError(
                f"the local platform runs one pod without autoscaler or activator (scale={scale}, "
                f"max_scale={max_scale}, target_burst_capacity={target_burst_capacity}, "
                f"annotations={annotations}): use a cluster platform"
            )
        app_image = image or self.app_images[app]
        revision = RevisionSpec(
            service=app,
            revision=f"{app}-00001",
            timeout_seconds=timeout_seconds,
            container_concurrency=container_concurrency,
            response_start_timeout_seconds=response_start_timeout_seconds or 0,
            idle_timeout_seconds=idle_timeout_seconds or 0,
            knative_version=self.knative_version,
        )
        return LocalPod(
            self.client,
            app_image=app_image,
            queue_proxy_image=self.queue_proxy_image,
            pause_image=self.pause_image,
            revision=revision,
            run_id=self.run_id,
            keep=self.keep,
            certs=self._certs if getattr(self._tls_cases, "on", False) else None,
            app_env=app_protocol_env(protocol),
        )

    def close(self) -> None:
        if not self.keep:
            sweep(self.client, self.run_id)
        if self._certs is not None:
            self._certs.close()
            self._certs = None
