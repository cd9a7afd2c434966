"""Talking to a real cluster with the official kubernetes client (no kubectl shell-outs).

Shared by the kind and existing platforms: a multi-document manifest applier (server-side
apply through the dynamic client, CRDs first), bounded waits, Knative Service rendering,
ConfigMap patches that restore what they changed, per-test namespaces, version detection.

Known traps handled here (issue 4): ``kubernetes.utils.create_from_yaml`` cannot apply
custom resources and puts objects without a namespace into ``default``; serving-core.yaml
holds a custom resource (the queue-proxy ``Image``) after its CRD, so the CRD must be
Established and discovery refreshed before it is applied; Knative's webhook answers 500
"failed calling webhook" while it starts.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError

from ..interrupts import shielded

T = TypeVar("T")
Progress = Callable[[str], None]

FIELD_MANAGER = "knative-drain"
RUN_LABEL = "knative-drain.run"
SERVING_NAMESPACE = "knative-serving"
#: How long to retry calls rejected by a Knative webhook that is still starting.
WEBHOOK_RETRY_S = 60.0
WEBHOOK_INTERVAL_S = 2.0
CRD_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 15.0
#: (connect, read) seconds for every API call made here: an unreachable or stuck API server
#: ends the call with a ClusterError instead of hanging the run (the client's default is
#: no timeout at all). Log follows and watches set their own, longer read bounds.
REQUEST_TIMEOUT = (10.0, 60.0)
#: Deleting what a case made: an unreachable API server is asked again this long, each
#: ask bounded (connect, read), before the namespace is reported left behind.
CLEANUP_RETRY_S = 60.0
CLEANUP_INTERVAL_S = 3.0
CLEANUP_TIMEOUT = (5.0, 20.0)
#: What an API call raises when the infrastructure (not our request) is the problem.
API_ERRORS = (ApiException, Urllib3Error, OSError)
_CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says what and how to fix it."""


def error_line(exc: BaseException) -> str:
    """One line for an API error: status and message, or why the server was not reached."""
    if isinstance(exc, ApiException):
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        message = str(body or "")
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(message).get("message") or message
        text = f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    elif isinstance(exc, MaxRetryError):  # urllib3 gave up: name the cause, not the pool
        text = _strip_object(str(exc.reason or exc))
    else:
        text = _strip_object(str(exc)) or type(exc).__name__
    return " ".join(text.split())[:400]


def _strip_object(text: str) -> str:
    """``<...HTTPSConnection object at 0x..>: Failed ...`` -> ``Failed ...`` (the host is
    named by the caller; urllib3's object reprs and pool names only repeat it)."""
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", text)
    return re.sub(r"HTTPS?Connection(Pool)?\(host=[^)]*\):\s*", "", text).strip()


def host_of(api: k8s.ApiClient) -> str:
    """The API server's URL as the client knows it (for messages)."""
    return str(getattr(api.configuration, "host", "") or "")


def cluster_error(doing: str, exc: BaseException, host: str | None) -> ClusterError:
    """``ClusterError`` for ``exc`` raised while ``doing`` against the API server ``host``."""
    return ClusterError(f"{doing}: {_problem(exc, host)}")


def _problem(exc: BaseException, host: str | None) -> str:
    server = f"the API server {host}" if host else "the API server"
    if isinstance(exc, ApiException) and exc.status:
        return f"{server} answered {error_line(exc)}"
    return f"cannot reach {server}: {error_line(exc)}"


@contextlib.contextmanager
def api_call(doing: str, api: k8s.ApiClient) -> Iterator[None]:
    """Turn what an API call raises (ApiException, urllib3, OSError) into one ClusterError."""
    try:
        yield
    except API_ERRORS as exc:
        raise cluster_error(doing, exc, host_of(api)) from None


def _quiet(_: str) -> None:
    pass


# -- connecting ---------------------------------------------------------------------------
def api_client(kubeconfig: str | Path | None = None, context: str | None = None) -> k8s.ApiClient:
    """An ApiClient for ``context`` in ``kubeconfig`` (defaults: $KUBECONFIG, current context)."""
    try:
        return k8s_config.new_client_from_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
    except (k8s_config.ConfigException, OSError, TypeError) as exc:
        where = f"--kubeconfig={kubeconfig}" if kubeconfig else "the default kubeconfig"
        ctx = f" --context={context}" if context else ""
        raise ClusterError(f"cannot load {where}{ctx}: {exc}") from None


def kubernetes_version(api: k8s.ApiClient) -> str:
    """The server's ``/version`` gitVersion, e.g. ``v1.31.14``."""
    with api_call("read /version", api):
        return k8s.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT).git_version


def knative_serving_version(api: k8s.ApiClient) -> tuple[str | None, str]:
    """(version, where it was read) of Knative Serving on the cluster; None if not installed.

    Releases label the knative-serving namespace and every deployment with
    ``app.kubernetes.io/version`` (1.10+); older ones used ``serving.knative.dev/release``.
    """
    core = k8s.CoreV1Api(api)
    doing = "detect the Knative Serving version"
    try:
        ns = core.read_namespace(SERVING_NAMESPACE, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None, f"namespace {SERVING_NAMESPACE} not found"
        raise cluster_error(doing, exc, host_of(api)) from None
    except (Urllib3Error, OSError) as exc:
        raise cluster_error(doing, exc, host_of(api)) from None
    for key in ("app.kubernetes.io/version", "serving.knative.dev/release"):
        value = (ns.metadata.labels or {}).get(key)
        if value and value != "devel":
            return value.removeprefix("v"), f"namespace {SERVING_NAMESPACE} label {key}"
    try:
        dep = k8s.AppsV1Api(api).read_namespaced_deployment(
            "controller", SERVING_NAMESPACE, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return None, f"no version label on namespace {SERVING_NAMESPACE}, no controller"
        raise cluster_error(doing, exc, host_of(api)) from None
    except (Urllib3Error, OSError) as exc:
        raise cluster_error(doing, exc, host_of(api)) from None
    for key in ("app.kubernetes.io/version", "serving.knative.dev/release"):
        value = (dep.metadata.labels or {}).get(key)
        if value and value != "devel":
            return value.removeprefix("v"), f"deployment {SERVING_NAMESPACE}/controller label {key}"
    images = [c.image for c in dep.spec.template.spec.containers]
    return None, f"no version label; controller image(s): {', '.join(images)}"


# -- the webhook-is-starting retry ----------------------------------------------------------
def webhook_starting(exc: BaseException) -> bool:
    """True for the 500 "failed calling webhook" an admission webhook gives while starting."""
    return (
        isinstance(exc, ApiException)
        and exc.status == 500
        and "failed calling webhook" in str(exc.body or exc.reason or "")
    )


def through_webhook(
    call: Callable[[], T],
    what: str,
    *,
    timeout_s: float = WEBHOOK_RETRY_S,
    interval_s: float = WEBHOOK_INTERVAL_S,
    progress: Progress = _quiet,
    host: str | None = None,
) -> T:
    """Run ``call``, retrying (bounded) only while a webhook answers 500 "failed calling".

    Any other API error ends as a ClusterError naming ``what`` and the API server ``host``.
    """

    def note(state: Any) -> None:
        progress(f"{what}: webhook not ready yet (try {state.attempt_number}), retrying")

    retrying = retry(
        retry=retry_if_exception(webhook_starting),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        before_sleep=note,
    )(call)
    try:
        return retrying()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        message = getattr(last, "body", None) or str(last)
        raise ClusterError(
            f"{what}: admission webhook still failing after {timeout_s:.0f} s: {message}"
        ) from None
    except API_ERRORS as exc:
        raise cluster_error(what, exc, host) from None


# -- bounded waits --------------------------------------------------------------------------
def wait_until(
    check: Callable[[], str | None],
    what: str,
    *,
    timeout_s: float,
    interval_s: float = 1.0,
    progress: Progress = _quiet,
    host: str | None = None,
) -> None:
    """Poll ``check`` (returns None when done, else what is still missing) until ``timeout_s``.

    Prints progress every PROGRESS_EVERY_S; on timeout raises ClusterError naming
    what never became ready. Infrastructure errors (API 5xx, urllib3 connection errors,
    OSError) are polled through until then, and named if they were the last word; any
    other API error (403, 404: our request is wrong, retrying cannot help) ends the wait
    at once as a ClusterError naming ``what`` and the API server ``host``.
    """
    started = time.monotonic()
    last_note = [started]
    missing: list[str] = ["not checked yet"]
    where = host

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(interval_s),
        retry=retry_if_exception_type((_NotYet, OSError, Urllib3Error))
        | retry_if_exception(_server_error),
    )
    def poll() -> None:
        try:
            result = check()
        except API_ERRORS as exc:
            missing[0] = _problem(exc, where)
            raise
        if result is not None:
            missing[0] = result
            now = time.monotonic()
            if now - last_note[0] >= PROGRESS_EVERY_S:
                last_note[0] = now
                progress(f"waiting for {what} ({now - started:.0f} s): {result}")
            raise _NotYet(result)

    try:
        poll()
    except RetryError:
        raise ClusterError(
            f"{what}: not ready after {timeout_s:.0f} s; still waiting for: {missing[0]}"
        ) from None
    except API_ERRORS as exc:  # not retried: a client error
        raise cluster_error(what, exc, where) from None


class _NotYet(Exception):
    pass


def _server_error(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and (exc.status or 0) >= 500


def wait_crds_established(
    api: k8s.ApiClient,
    names: Iterable[str],
    *,
    timeout_s: float = CRD_TIMEOUT_S,
    progress: Progress = _quiet,
) -> None:
    """Wait until every named CRD has condition Established=True."""
    ext = k8s.ApiextensionsV1Api(api)
    wanted = sorted(names)

    def check() -> str | None:
        pending = []
        for name in wanted:
            crd = ext.read_custom_resource_definition(name, _request_timeout=REQUEST_TIMEOUT)
            conditions = (crd.status.conditions if crd.status else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.append(name)
        return f"CRDs not Established: {', '.join(pending)}" if pending else None

    wait_until(check, "CRDs Established", timeout_s=timeout_s, progress=progress, host=host_of(api))


def wait_deployments_available(
    api: k8s.ApiClient, namespace: str, *, timeout_s: float, progress: Progress = _quiet
) -> None:
    """Wait until every Deployment in ``namespace`` has all its replicas available."""
    apps = k8s.AppsV1Api(api)

    def check() -> str | None:
        pending = []
        deps = apps.list_namespaced_deployment(namespace, _request_timeout=REQUEST_TIMEOUT)
        for dep in deps.items:
            want = dep.spec.replicas if dep.spec.replicas is not None else 1
            have = (dep.status.available_replicas if dep.status else 0) or 0
            if have < want:
                pending.append(f"{dep.metadata.name} {have}/{want} available")
        return f"deployments in {namespace}: {', '.join(pending)}" if pending else None

    wait_until(
        check,
        f"deployments in {namespace}",
        timeout_s=timeout_s,
        progress=progress,
        host=host_of(api),
    )


def wait_pods_ready(
    api: k8s.ApiClient,
    namespace: str,
    *,
    selector: str = "!job-name",
    timeout_s: float,
    progress: Progress = _quiet,
) -> None:
    """Wait until at least one pod matches ``selector`` and every match is Ready."""
    core = k8s.CoreV1Api(api)

    def check() -> str | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
        ).items
        if not pods:
            return f"no pods in {namespace} matching {selector!r}"
        pending = [
            f"{p.metadata.name} ({p.status.phase})"
            for p in pods
            if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return f"pods in {namespace} not Ready: {', '.join(pending)}" if pending else None

    wait_until(
        check, f"pods in {namespace}", timeout_s=timeout_s, progress=progress, host=host_of(api)
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
        progress: Progress = _quiet,
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
        crds = [d for d in items if (d["apiVersion"], d["kind"]) == _CRD]
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


# -- Knative Service rendering ---------------------------------------------------------------
@dataclass(frozen=True)
class KsvcSpec:
    """The knobs a scenario sets on its Knative Service (serving.knative.dev/v1)."""

    name: str
    image: str
    timeout_seconds: int = 300
    container_concurrency: int = 0
    min_scale: int = 1
    max_scale: int = 1  # 0 = no upper bound
    target_burst_capacity: int | None = None  # -1: activator always in path; 0: only from zero
    port: int = 8080
    env: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # more revision annotations
    # revision spec fields (Knative 1.7+); None: the cluster's defaults
    response_start_timeout_seconds: int | None = None
    idle_timeout_seconds: int | None = None

    def check(self) -> None:
        """Raise ClusterError naming the field and its accepted values."""
        problems = []
        if not _DNS_LABEL.match(self.name) or len(self.name) > 63:
            problems.append(f"name={self.name!r}: lowercase letters, digits, '-'; <= 63 chars")
        if not self.image:
            problems.append("image: required")
        for key, low in (
            ("timeout_seconds", 1),
            ("container_concurrency", 0),
            ("min_scale", 0),
            ("max_scale", 0),
            ("port", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{key}={value!r}: a whole number >= {low}")
        for key in ("response_start_timeout_seconds", "idle_timeout_seconds"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                problems.append(f"{key}={value!r}: None or a whole number >= 0")
        if not problems and self.max_scale and self.max_scale < self.min_scale:
            problems.append(f"max_scale={self.max_scale}: >= min_scale ({self.min_scale}) or 0")
        tbc = self.target_burst_capacity
        if tbc is not None and (isinstance(tbc, bool) or not isinstance(tbc, int) or tbc < -1):
            problems.append(f"target_burst_capacity={tbc!r}: -1, 0 or a positive whole number")
        if problems:
            raise ClusterError("Knative Service: " + "; ".join(problems))


def service_name(app: str) -> str:
    """A DNS-label Knative Service name for an app name ("custom", "go-exit", ...)."""
    name = "".join(c if c.isalnum() else "-" for c in app.lower()).strip("-")[:40]
    return f"drain-{name or 'app'}"


def render_ksvc(spec: KsvcSpec, namespace: str) -> dict[str, Any]:
    """The Knative Service object for ``spec`` (annotations per knative.dev/docs autoscaling)."""
    spec.check()
    annotations = {
        "autoscaling.knative.dev/min-scale": str(spec.min_scale),
        "autoscaling.knative.dev/max-scale": str(spec.max_scale),
    }
    if spec.target_burst_capacity is not None:
        annotations["autoscaling.knative.dev/target-burst-capacity"] = str(
            spec.target_burst_capacity
        )
    annotations.update(spec.annotations)
    container: dict[str, Any] = {
        "name": "user-container",
        "image": spec.image,
        "ports": [{"containerPort": spec.port}],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    revision: dict[str, Any] = {
        "timeoutSeconds": spec.timeout_seconds,
        "containerConcurrency": spec.container_concurrency,
    }
    # Explicit even when no config sets it: Knative defaults it to 300 s (config-defaults;
    # from 1.13 to the revision timeout default), which would answer 504 to a request that
    # sleeps 300 s before its first byte (the seed profile) under timeoutSeconds 600.
    revision["responseStartTimeoutSeconds"] = (
        spec.timeout_seconds
        if spec.response_start_timeout_seconds is None
        else spec.response_start_timeout_seconds
    )
    if spec.idle_timeout_seconds is not None:
        revision["idleTimeoutSeconds"] = spec.idle_timeout_seconds
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {**revision, "containers": [container]},
            }
        },
    }


# -- ConfigMap patches that undo themselves -------------------------------------------------
class ConfigMapPatch:
    """Set keys of a ConfigMap; ``restore()`` puts back the old values (or removes new keys).

    Calls go through ``through_webhook``: Knative validates its config maps with a webhook.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        name: str,
        data: dict[str, str],
        *,
        namespace: str = SERVING_NAMESPACE,
        progress: Progress = _quiet,
        webhook_timeout_s: float = WEBHOOK_RETRY_S,
    ) -> None:
        bad = {k: v for k, v in data.items() if not isinstance(v, str)}
        if bad:
            raise ClusterError(f"ConfigMap {namespace}/{name}: values must be strings: {bad}")
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.name = name
        self.namespace = namespace
        self.data = dict(data)
        self.progress = progress
        self.webhook_timeout_s = webhook_timeout_s
        self.saved: dict[str, str | None] | None = None

    def _patch(self, data: dict[str, str | None], what: str) -> None:
        through_webhook(
            lambda: self.core.patch_namespaced_config_map(
                self.name,
                self.namespace,
                {"data": data},
                field_manager=FIELD_MANAGER,
                _request_timeout=REQUEST_TIMEOUT,
            ),
            f"{what} ConfigMap {self.namespace}/{self.name}",
            timeout_s=self.webhook_timeout_s,
            progress=self.progress,
            host=host_of(self.api),
        )

    def apply(self) -> None:
        """Remember the current values of the keys, then set the new ones."""
        try:
            current = (
                self.core.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                ).data
                or {}
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"ConfigMap {self.namespace}/{self.name} does not exist (is Knative installed?)"
                ) from None
            raise cluster_error(
                f"read ConfigMap {self.namespace}/{self.name}", exc, host_of(self.api)
            ) from None
        except (Urllib3Error, OSError) as exc:
            raise cluster_error(
                f"read ConfigMap {self.namespace}/{self.name}", exc, host_of(self.api)
            ) from None
        self.saved = {key: current.get(key) for key in self.data}
        self._patch(dict(self.data), "patch")
        self.progress(f"patched {self.namespace}/{self.name}: {self.data}")

    def restore(self) -> None:
        """Put back what ``apply`` changed (``None`` in a merge patch deletes a key)."""
        if self.saved is None:
            return
        self._patch(dict(self.saved), "restore")
        self.saved = None

    def __enter__(self) -> ConfigMapPatch:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


# -- namespaces --------------------------------------------------------------------------------
class Namespaces:
    """Namespaces this run creates, labelled with the run id and deleted at the end."""

    def __init__(self, api: k8s.ApiClient, run_id: str, *, keep: bool = False) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.run_id = run_id
        self.keep = keep
        self.created: list[str] = []

    def create(self, prefix: str = "drain") -> str:
        """A new namespace ``<prefix>-<random>``."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise ClusterError(f"namespace prefix {prefix!r}: lowercase letters, digits and '-'")
        body = k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(
                name=name,
                labels={RUN_LABEL: self.run_id, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            )
        )
        with shielded():  # a signal lands after the name is held, so it is deleted
            with api_call(f"create namespace {name}", self.api):
                self.core.create_namespace(body, _request_timeout=REQUEST_TIMEOUT)
            self.created.append(name)
        return name

    def delete(self, name: str) -> None:
        """Start deleting ``name`` (namespace controller finishes it); gone is fine.

        Cleanup: an API error is ignored; an unreachable API server is asked again for
        CLEANUP_RETRY_S (it may be back after a restart or a network blip that ended the
        case), then it is a ClusterError (the namespace stays behind, the message says where).
        """

        def once() -> None:
            with (
                shielded(),  # a signal cannot cut the call after the name is dropped below
                contextlib.suppress(ApiException),
            ):
                self.core.delete_namespace(
                    name, propagation_policy="Background", _request_timeout=CLEANUP_TIMEOUT
                )

        asking = retry(
            retry=retry_if_exception_type((Urllib3Error, OSError)),
            stop=stop_after_delay(CLEANUP_RETRY_S),
            wait=wait_fixed(CLEANUP_INTERVAL_S),
            reraise=True,
        )(once)
        try:
            with api_call(f"delete namespace {name}", self.api):
                asking()
        finally:
            if name in self.created:
                self.created.remove(name)

    @contextlib.contextmanager
    def scoped(self, prefix: str = "drain") -> Iterator[str]:
        """One namespace for one test, deleted afterwards unless kept."""
        name = self.create(prefix)
        try:
            yield name
        finally:
            if not self.keep:
                self.delete(name)

    def close(self) -> None:
        """Delete every namespace still held (unless kept)."""
        if not self.keep:
            for name in list(self.created):
                self.delete(name)
