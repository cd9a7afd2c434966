"""Talking to a real cluster with the official kubernetes client (no kubectl shell-outs):
the client, the errors in one line, version detection, bounded waits, and the retry while
Knative's webhook starts (it answers 500 "failed calling webhook" until it is up).

The applier is apply.py, the Knative Service ksvc.py, what a run changes and undoes
changes.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
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
#: What an API call raises when the infrastructure (not our request) is the problem.
API_ERRORS = (ApiException, Urllib3Error, OSError)
CRD_TYPE = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


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


def quiet(_: str) -> None:
    """A progress callback that says nothing."""
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
    progress: Progress = quiet,
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
    progress: Progress = quiet,
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
    progress: Progress = quiet,
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
    api: k8s.ApiClient, namespace: str, *, timeout_s: float, progress: Progress = quiet
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
    progress: Progress = quiet,
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
