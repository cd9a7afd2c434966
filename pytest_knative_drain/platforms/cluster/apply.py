"""Applying multi-document manifests to a cluster: server-side apply through the dynamic
client, CRDs first and Established before their custom resources, objects labelled with
the run so a sweep finds them.

``kubernetes.utils.create_from_yaml`` cannot apply custom resources and puts objects
without a namespace into ``default``; serving-core.yaml holds a custom resource (the
queue-proxy ``Image``) after its CRD, so discovery is refreshed once the CRD exists.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

from .api import (
    CRD_TIMEOUT_S,
    CRD_TYPE,
    FIELD_MANAGER,
    REQUEST_TIMEOUT,
    WEBHOOK_RETRY_S,
    ClusterError,
    Progress,
    api_call,
    host_of,
    quiet,
    through_webhook,
    wait_crds_established,
)


# -- applying manifests ---------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectRef:
    """Where an applied object lives."""

    api_version: str
    kind: str
    name: str
    namespace: str | None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


class Applier:
    """Server-side apply of multi-document manifests through the dynamic client.

    Order: Namespaces, then CustomResourceDefinitions (then wait Established and refresh
    discovery), then everything else in document order. A namespaced object with no
    ``metadata.namespace`` goes to ``namespace`` if given, else it is an error: nothing
    is ever put into ``default`` silently.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        progress: Progress = quiet,
        crd_timeout_s: float = CRD_TIMEOUT_S,
        webhook_timeout_s: float = WEBHOOK_RETRY_S,
        discovery_timeout_s: float = 10.0,
    ) -> None:
        self.api = api
        self.discovery_timeout_s = discovery_timeout_s
        self.field_manager = field_manager
        self.progress = progress
        self.crd_timeout_s = crd_timeout_s
        self.webhook_timeout_s = webhook_timeout_s
        # The dynamic client caches discovery in a file; keep it in our own temp dir
        # (its default is a shared /tmp/osrcp-<hash>.json that outlives the run).
        self._cache_dir = tempfile.mkdtemp(prefix="knative-drain-discovery-")
        self.host = host_of(api)
        try:
            with api_call("discover the API server's resources", api):
                self.dynamic = _TimedDynamicClient(
                    api, cache_file=str(Path(self._cache_dir) / "discovery")
                )
        except ClusterError:
            self.close()
            raise

    def close(self) -> None:
        """Remove the discovery cache."""
        shutil.rmtree(self._cache_dir, ignore_errors=True)

    def __enter__(self) -> Applier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(
        self, docs: Iterable[dict[str, Any]], *, namespace: str | None = None
    ) -> list[ObjectRef]:
        """Apply every document; returns what was applied, in apply order."""
        items = [d for d in docs if d]
        for doc in items:
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                raise ClusterError(
                    f"not a Kubernetes object (apiVersion/kind missing): {doc!r:.200}"
                )
            if not (doc.get("metadata") or {}).get("name"):
                raise ClusterError(f"{doc['kind']} without metadata.name: {doc!r:.200}")
        namespaces = [d for d in items if (d["apiVersion"], d["kind"]) == ("v1", "Namespace")]
        crds = [d for d in items if (d["apiVersion"], d["kind"]) == CRD_TYPE]
        rest = [d for d in items if d not in namespaces and d not in crds]
        applied = [self._apply_one(d, namespace) for d in namespaces + crds]
        if crds:
            wait_crds_established(
                self.api,
                [d["metadata"]["name"] for d in crds],
                timeout_s=self.crd_timeout_s,
                progress=self.progress,
            )
            self.dynamic.resources.invalidate_cache()  # new kinds become discoverable
        applied += [self._apply_one(d, namespace) for d in rest]
        return applied

    def _resource(self, api_version: str, kind: str) -> Any:
        @retry(
            retry=retry_if_exception_type(ResourceNotFoundError),
            stop=stop_after_delay(self.discovery_timeout_s),
            wait=wait_fixed(1),
            before_sleep=lambda _: self.dynamic.resources.invalidate_cache(),
        )
        def find() -> Any:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

        try:
            with api_call(f"discover {kind} in {api_version}", self.api):
                return find()
        except RetryError:
            raise ClusterError(
                f"the cluster serves no {kind} in {api_version} (is its CRD applied first?)"
            ) from None

    def _apply_one(self, doc: dict[str, Any], namespace: str | None) -> ObjectRef:
        api_version, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
        resource = self._resource(api_version, kind)
        body = {**doc, "metadata": dict(doc["metadata"])}
        ns: str | None = None
        if resource.namespaced:
            own = body["metadata"].get("namespace")
            if own and namespace and own != namespace:
                raise ClusterError(
                    f"{kind} {own}/{name}: its metadata.namespace differs from the target "
                    f"namespace {namespace!r}"
                )
            ns = own or namespace
            if not ns:
                raise ClusterError(
                    f"{kind} {name} is namespaced but has no metadata.namespace and no target "
                    "namespace was given (refusing to put it into 'default')"
                )
            body["metadata"]["namespace"] = ns
        else:
            body["metadata"].pop("namespace", None)  # cluster-scoped: a namespace is meaningless
        ref = ObjectRef(api_version, kind, name, ns)
        through_webhook(
            lambda: self.dynamic.server_side_apply(
                resource,
                body=body,
                namespace=ns,
                field_manager=self.field_manager,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            f"apply {ref}",
            timeout_s=self.webhook_timeout_s,
            progress=self.progress,
            host=self.host,
        )
        return ref

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        """The live object as a plain dict."""
        resource = self._resource(ref.api_version, ref.kind)
        with api_call(f"read {ref}", self.api):
            return resource.get(
                name=ref.name, namespace=ref.namespace, _request_timeout=REQUEST_TIMEOUT
            ).to_dict()


class _TimedDynamicClient(DynamicClient):
    """The dynamic client with REQUEST_TIMEOUT on every request, discovery included
    (``DynamicClient`` passes ``_request_timeout`` through but sets none itself)."""

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        params.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return super().request(method, path, body, **params)
