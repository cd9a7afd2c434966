"""``--platform=existing``: a cluster the user already runs Knative Serving on (vendors).

Installs nothing. Detects the Knative Serving and Kubernetes versions for the report,
works only in namespaces it creates (and deletes them), and refuses to change the
cluster-wide Knative ConfigMaps unless the user allowed it (``--allow-cluster-config``):
on a shared cluster those settings belong to the operator, not to a test run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed
from urllib3.exceptions import HTTPError as Urllib3Error

from ..knative import internal_tls
from ..matrix.configs import KnativeConfig
from ..matrix.scenarios import Scenario
from .cluster import ingress as ingress_address
from .cluster.api import ClusterError, Progress, api_client, knative_serving_version
from .cluster.ingress import IngressAddress
from .cluster.knative_config import KnativeConfigPatch
from .serving_platform import ServingPlatform

ALLOW_OPTION = "--allow-cluster-config"


class ClusterConfigRefused(ClusterError):
    """A scenario needs a cluster-wide ConfigMap change the user did not allow."""


def refuse_unwired(config: KnativeConfig) -> None:
    """A config the cluster platforms cannot set up (internal-tls): the case is skipped
    with the reason, never run without what it names."""
    if config.name == internal_tls.CONFIG:
        raise ClusterConfigRefused(internal_tls.CLUSTER_REASON)


def _print(message: str) -> None:
    print(f"[knative-drain] {message}")


class ExistingPlatform(ServingPlatform):
    """A connected existing cluster with Knative Serving; see the module docstring."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        run_id: str,
        ingress: IngressAddress,
        allow_cluster_config: bool = False,
        keep: bool = False,
        progress: Progress = _print,
        facts: dict[str, Any] | None = None,
        app_images: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            api,
            run_id=run_id,
            ingress=ingress,
            app_images=app_images,
            progress=progress,
            keep=keep,
            facts=facts,
        )
        self.run_id = run_id
        self.allow_cluster_config = allow_cluster_config

    @classmethod
    def connect(
        cls,
        kubeconfig: str | Path | None,
        context: str | None,
        *,
        run_id: str,
        requested_version: str | None = None,
        allow_cluster_config: bool = False,
        keep: bool = False,
        progress: Progress = _print,
        timeout_s: float = 15.0,
        ingress_url: str | None = None,
        ingress_port: int | None = None,
        app_images: dict[str, str] | None = None,
    ) -> ExistingPlatform:
        """Connect (bounded), detect versions, and fail fast with a clear message if unusable.

        The ingress is ``ingress_url``, else 127.0.0.1:``ingress_port`` (a port-forward),
        else read from the cluster (platforms/cluster/ingress.py).

        The cluster's own Knative Serving version is what the run measures, so it is the
        ``knative_version`` the report names. ``requested_version`` is ``--knative-version``
        as the user typed it (None when not given: the default asks for nothing); when it
        does not match the cluster, the facts keep it as ``requested_knative_version``.
        """
        api = api_client(kubeconfig, context)
        host = api.configuration.host
        where = f"{host} (--kubeconfig={kubeconfig or 'default'}, --context={context or 'current'})"

        @retry(
            stop=stop_after_delay(timeout_s),
            wait=wait_fixed(1),
            retry=retry_if_exception_type((Urllib3Error, OSError)),
        )
        def version() -> str:
            return kubernetes_version_timeout(api, 5)

        try:
            kube = version()
        except RetryError as exc:
            raise ClusterError(
                f"--platform=existing: cannot reach the cluster at {where} within "
                f"{timeout_s:.0f} s: {exc.last_attempt.exception()}"
            ) from None
        except ApiException as exc:
            raise ClusterError(
                f"--platform=existing: the cluster at {where} answered {exc.status} "
                f"{exc.reason} to /version (credentials?)"
            ) from None
        knative, source = knative_serving_version(api)
        if knative is None:
            raise ClusterError(
                f"--platform=existing: Knative Serving not found on {where}: {source}. "
                "This platform installs nothing: install Knative Serving first, or use "
                "--platform=kind"
            )
        facts: dict[str, Any] = {
            "kubernetes_version": kube,
            "knative_version": knative,
            "knative_version_source": source,
            "server": host,
            "context": context,
        }
        if requested_version is not None and not same_version(knative, requested_version):
            facts["requested_knative_version"] = requested_version
            progress(
                f"warning: the cluster runs Knative Serving {knative}, not the requested "
                f"--knative-version={requested_version}; the report names {knative} and "
                "records the request"
            )
        progress(f"existing cluster {host}: Kubernetes {kube}, Knative Serving {knative}")
        ingress = choose_ingress(api, ingress_url, ingress_port)
        progress(f"ingress {ingress.url}: {ingress.how}")
        return cls(
            api,
            run_id=run_id,
            allow_cluster_config=allow_cluster_config,
            keep=keep,
            progress=progress,
            facts=facts,
            ingress=ingress,
            app_images=app_images,
        )

    def describe(self) -> dict[str, Any]:
        """Facts for the report's environment section."""
        return {
            "platform": "existing",
            "allow_cluster_config": self.allow_cluster_config,
            "ingress": f"{self.ingress.url} ({self.ingress.how}), with the Knative Service's "
            "Host header",
            "ingress_url": self.ingress.url,
            **self.facts,
        }

    def missing_image(self, app: str) -> str:
        return (
            f"--platform=existing: no image for app {app!r}. The fixture apps are built "
            "locally and are in no registry your cluster can pull from: pass your own "
            "image with --app-image=REGISTRY/NAME:TAG (pushed where the cluster pulls), "
            "or push the fixture apps with `knative-drain push-apps --registry=REGISTRY` "
            "and pass --app-registry=REGISTRY"
        )

    def configure(self, config: KnativeConfig, scenario: Scenario) -> KnativeConfigPatch:
        """The scenario's Knative configuration, or ClusterConfigRefused unless allowed."""
        refuse_unwired(config)
        patch = super().configure(config, scenario)
        if patch.changes and not self.allow_cluster_config:
            raise ClusterConfigRefused(
                f"{scenario.name} under Knative config {config.name!r} changes cluster-wide "
                f"settings ({'; '.join(patch.changes)}); --platform=existing leaves cluster "
                f"configuration alone unless you pass {ALLOW_OPTION} (old values are restored "
                "afterwards)"
            )
        return patch

    def close(self) -> None:
        """Delete the namespaces this run created (unless kept)."""
        self.namespaces.close()


def choose_ingress(
    api: k8s.ApiClient, ingress_url: str | None, ingress_port: int | None
) -> IngressAddress:
    """``--ingress-url``, else ``--ingress-port`` on loopback, else the cluster's own address."""
    if ingress_url:
        url = ingress_address.parse_ingress_url(ingress_url)
        return IngressAddress(
            url, f"{ingress_address.INGRESS_URL_OPTION} as given", ingress_address.is_loopback(url)
        )
    if ingress_port is not None:
        return ingress_address.forwarded(ingress_port)
    try:
        return ingress_address.discover(api)
    except ClusterError as exc:
        raise ClusterError(f"--platform=existing: the ingress address: {exc}") from None


def kubernetes_version_timeout(api: k8s.ApiClient, timeout_s: float) -> str:
    """``/version`` with a request timeout, so an unreachable server fails fast."""
    return k8s.VersionApi(api).get_code(_request_timeout=timeout_s).git_version


def same_version(detected: str, requested: str) -> bool:
    """True when ``detected`` is ``requested`` or one of its patches (``1.14`` vs ``1.14.1``)."""
    want = requested.strip().lower().removeprefix("knative-").removeprefix("v")
    return detected == want or detected.startswith(want + ".")
