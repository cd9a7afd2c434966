"""What a run changes on a cluster and undoes: ConfigMap patches that restore the values
they replaced, and the per-test namespaces (labelled with the run, deleted at the end)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from ...host.signals import shielded
from .api import (
    DNS_LABEL,
    FIELD_MANAGER,
    REQUEST_TIMEOUT,
    RUN_LABEL,
    SERVING_NAMESPACE,
    WEBHOOK_RETRY_S,
    ClusterError,
    Progress,
    api_call,
    cluster_error,
    host_of,
    quiet,
    through_webhook,
)

#: Deleting what a case made: an unreachable API server is asked again this long, each
#: ask bounded (connect, read), before the namespace is reported left behind.
CLEANUP_RETRY_S = 60.0
CLEANUP_INTERVAL_S = 3.0
CLEANUP_TIMEOUT = (5.0, 20.0)


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
        progress: Progress = quiet,
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
        if not DNS_LABEL.match(name) or len(name) > 63:
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
