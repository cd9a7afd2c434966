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

from ..catalog import Release
from .cluster import (
    SERVING_NAMESPACE,
    ClusterError,
    ConfigMapPatch,
    Namespaces,
    Progress,
    api_client,
    knative_serving_version,
)

ALLOW_OPTION = "--allow-cluster-config"


class ClusterConfigRefused(ClusterError):
    """A scenario needs a cluster-wide ConfigMap change the user did not allow."""


def _print(message: str) -> None:
    print(f"[knative-drain] {message}")


class ExistingPlatform:
    """A connected existing cluster with Knative Serving; see the module docstring."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        run_id: str,
        allow_cluster_config: bool = False,
        keep: bool = False,
        progress: Progress = _print,
        facts: dict[str, Any] | None = None,
    ) -> None:
        self.api = api
        self.run_id = run_id
        self.allow_cluster_config = allow_cluster_config
        self.keep = keep
        self.progress = progress
        self.facts = facts or {}
        self.namespaces = Namespaces(api, run_id, keep=keep)

    @classmethod
    def connect(
        cls,
        kubeconfig: str | Path | None,
        context: str | None,
        *,
        run_id: str,
        release: Release | None = None,
        allow_cluster_config: bool = False,
        keep: bool = False,
        progress: Progress = _print,
        timeout_s: float = 15.0,
    ) -> ExistingPlatform:
        """Connect (bounded), detect versions, and fail fast with a clear message if unusable."""
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
        if release is not None:
            facts["requested_knative_version"] = release.version
            if knative.rsplit(".", 1)[0] != release.minor:
                progress(
                    f"warning: the cluster runs Knative Serving {knative}, not the requested "
                    f"{release.version}; the report records both"
                )
        progress(f"existing cluster {host}: Kubernetes {kube}, Knative Serving {knative}")
        return cls(
            api,
            run_id=run_id,
            allow_cluster_config=allow_cluster_config,
            keep=keep,
            progress=progress,
            facts=facts,
        )

    def describe(self) -> dict[str, Any]:
        """Facts for the report's environment section."""
        return {
            "platform": "existing",
            "allow_cluster_config": self.allow_cluster_config,
            **self.facts,
        }

    def config_patch(
        self, name: str, data: dict[str, str], *, namespace: str = SERVING_NAMESPACE
    ) -> ConfigMapPatch:
        """A restoring ConfigMap patch, or ClusterConfigRefused unless the user allowed it."""
        if not self.allow_cluster_config:
            raise ClusterConfigRefused(
                f"this scenario changes the cluster-wide ConfigMap {namespace}/{name} "
                f"({', '.join(f'{k}={v}' for k, v in data.items())}); --platform=existing "
                f"leaves cluster configuration alone unless you pass {ALLOW_OPTION} "
                "(the old values are restored afterwards)"
            )
        return ConfigMapPatch(self.api, name, data, namespace=namespace, progress=self.progress)

    def pod(self, app: str, image: str | None, timeout_seconds: int) -> Any:
        """Not available yet: Knative Service targets on clusters come in a later version."""
        raise ClusterError(
            "--platform=existing: running scenarios (Knative Service per test, pod triggers) "
            "is not implemented in this version yet; use --platform=local"
        )

    def close(self) -> None:
        """Delete the namespaces this run created (unless kept)."""
        self.namespaces.close()


def kubernetes_version_timeout(api: k8s.ApiClient, timeout_s: float) -> str:
    """``/version`` with a request timeout, so an unreachable server fails fast."""
    return k8s.VersionApi(api).get_code(_request_timeout=timeout_s).git_version
