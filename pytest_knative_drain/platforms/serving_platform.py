"""What the kind and existing platforms share: Knative Services as pod targets, and the
scenario's Knative configuration applied to the cluster (and restored)."""

from __future__ import annotations

from typing import Any

import requests
from kubernetes import client as k8s
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from ..matrix.configs import KnativeConfig
from ..matrix.scenarios import Scenario
from .cluster.api import ClusterError, Progress
from .cluster.capacity import Capacity, read_capacity
from .cluster.changes import Namespaces
from .cluster.faults import NodeProbe
from .cluster.ingress import IngressAddress
from .cluster.knative_config import KnativeConfigPatch, patch_for
from .cluster.knative_pod import KnativePod
from .cluster.ksvc import KsvcSpec, service_name
from .pod import app_protocol_env


class ServingPlatform:
    """A cluster with Knative Serving whose ingress answers at ``ingress.url``."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        run_id: str,
        ingress: IngressAddress,
        app_images: dict[str, str] | None,
        progress: Progress,
        keep: bool,
        facts: dict[str, Any] | None,
        keep_namespaces: bool | None = None,
    ) -> None:
        """``keep`` keeps what the run made; ``keep_namespaces`` (default: ``keep``) says
        whether that includes each case's namespace and pods."""
        self.api = api
        self.ingress = ingress
        self.app_images = dict(app_images or {})
        self.progress = progress
        self.keep = keep
        self.facts = facts or {}
        self.keep_namespaces = keep if keep_namespaces is None else keep_namespaces
        self.namespaces = Namespaces(api, run_id, keep=self.keep_namespaces)
        self.node_probe: NodeProbe | None = None  # kind: a node's container state in Docker

    def check_ingress(self, timeout_s: float = 60.0) -> str:
        """One setup error instead of a drain failure per case when nothing answers at the
        ingress (a missing port-forward, a wrong ``--ingress-port`` or ``--ingress-url``).

        Any HTTP answer will do (Kourier answers 404 for a host it has no route for);
        the server header is recorded. Retried while the gateway starts (infrastructure).
        """
        url = f"{self.ingress.url}/"
        headers = {"Host": "knative-drain-ingress-probe.invalid"}

        @retry(
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(2),
            retry=retry_if_exception_type(requests.RequestException),
        )
        def probe() -> requests.Response:
            return requests.get(url, headers=headers, timeout=5)

        try:
            answer = probe()
        except RetryError as exc:
            raise ClusterError(
                f"the ingress ({self.ingress.how}): nothing answers HTTP on {url} within "
                f"{timeout_s:.0f} s ({exc.last_attempt.exception()}); it must be reachable "
                "from this machine (--ingress-url=http://HOST:PORT, or --ingress-port=N with "
                "e.g. kubectl port-forward -n kourier-system svc/kourier N:80)"
            ) from None
        found = f"HTTP {answer.status_code} from {answer.headers.get('server', 'unknown server')}"
        self.facts["ingress_probe"] = found
        return found

    def capacity(self) -> Capacity:
        """CPU the cluster's nodes have not promised yet, in revision pods."""
        return read_capacity(self.api)

    def missing_image(self, app: str) -> str:
        """Why there is no image for ``app`` and what to do about it."""
        return f"no image for app {app!r}"

    def configure(self, config: KnativeConfig, scenario: Scenario) -> KnativeConfigPatch:
        """The scenario's Knative configuration: a context manager that restores it."""
        return patch_for(self.api, config, scenario, progress=self.progress)

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
    ) -> KnativePod:
        """A not-yet-started Knative Service of ``app`` in its own namespace.

        ``image`` is the user's ``--app-image``; else the fixture app's image.
        """
        chosen = image or self.app_images.get(app)
        if not chosen:
            raise ClusterError(self.missing_image(app))
        spec = KsvcSpec(
            name=service_name(app),
            image=chosen,
            timeout_seconds=timeout_seconds,
            min_scale=scale,
            max_scale=scale if max_scale is None else max_scale,
            target_burst_capacity=target_burst_capacity,
            annotations=dict(annotations or {}),
            response_start_timeout_seconds=response_start_timeout_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
            port_name=protocol,
            container_concurrency=container_concurrency,
            env=app_protocol_env(protocol),
            liveness_probe=liveness_probe,
        )
        return KnativePod(
            self.api,
            spec,
            namespaces=self.namespaces,
            ingress_url=self.ingress.url,
            ingress_forwarded=self.ingress.forwarded,
            progress=self.progress,
            keep=self.keep_namespaces,
            node_probe=self.node_probe,
        )
