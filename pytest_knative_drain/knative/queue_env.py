"""queue-proxy's environment for one Knative release, as that release's reconciler writes it.

The names and the releases that set them were read in ``makeQueueContainer``
(pkg/reconciler/revision/resources/queue.go) at every ``knative-v1.X.0`` tag from 1.0 to
1.23, and checked against the ``required:"true"`` fields queue-proxy's ``envconfig`` reads
(cmd/queue/main.go up to 1.6, pkg/queue/sharedmain/main.go from 1.7). A name a release
does not know is left out, so an old queue-proxy sees what a cluster of its time gave it.

Deliberately not set: ``HOST_IP`` (the node's IP: a downward-API field with no node here;
queue-proxy only tags metrics with it), ``OBSERVABILITY_CONFIG`` (1.19+: absent means
queue-proxy's defaults, which is what the default ConfigMap gives), and 1.22's
``QUEUE_PROXY_TLS_*`` (absent means Go's TLS defaults; they matter only with internal TLS).
"""

from __future__ import annotations

import json

from . import catalog

# name -> (first release that sets it, last release that sets it or None). Names set by
# every release 1.0-1.23 are not listed.
_SET_IN: dict[str, tuple[str, str | None]] = {
    "CONCURRENCY_STATE_ENDPOINT": ("1.0", "1.9"),
    "CONCURRENCY_STATE_TOKEN_PATH": ("1.0", "1.9"),
    "MAX_DURATION_SECONDS": ("1.2", "1.2"),
    "QUEUE_SERVING_TLS_PORT": ("1.4", None),  # required by queue-proxy from 1.6
    "REVISION_RESPONSE_START_TIMEOUT_SECONDS": ("1.7", None),
    "REVISION_IDLE_TIMEOUT_SECONDS": ("1.7", None),
    "ROOT_CA": ("1.9", None),
    "SERVING_REQUEST_METRICS_REPORTING_PERIOD_SECONDS": ("1.11", "1.18"),
    "ENABLE_HTTP_FULL_DUPLEX": ("1.13", None),
    "ENABLE_MULTI_CONTAINER_PROBES": ("1.14", None),
    # 1.19 moved metrics and tracing into OBSERVABILITY_CONFIG
    "ENABLE_PROFILING": ("1.0", "1.18"),
    "METRICS_COLLECTOR_ADDRESS": ("1.0", "1.18"),
    "METRICS_DOMAIN": ("1.0", "1.18"),
    "SERVING_ENABLE_PROBE_REQUEST_LOG": ("1.0", "1.18"),
    "SERVING_ENABLE_REQUEST_LOG": ("1.0", "1.18"),
    "SERVING_REQUEST_LOG_TEMPLATE": ("1.0", "1.18"),
    "SERVING_REQUEST_METRICS_BACKEND": ("1.0", "1.18"),
    "TRACING_CONFIG_BACKEND": ("1.0", "1.18"),
    "TRACING_CONFIG_DEBUG": ("1.0", "1.18"),
    "TRACING_CONFIG_SAMPLE_RATE": ("1.0", "1.18"),
    "TRACING_CONFIG_ZIPKIN_ENDPOINT": ("1.0", "1.18"),
}


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def sets(name: str, version: str) -> bool:
    """Whether Knative ``version``'s reconciler gives queue-proxy the variable ``name``."""
    span = _SET_IN.get(name)
    if span is None:
        return True
    first, last = span
    v = _minor(version)
    return _minor(first) <= v and (last is None or v <= _minor(last))


def queue_proxy_env(
    version: str,
    *,
    namespace: str,
    service: str,
    revision: str,
    pod: str,
    pod_ip: str,
    serving_port: int,
    tls_port: int,
    user_port: int,
    timeout_seconds: int,
    response_start_timeout_seconds: int = 0,
    idle_timeout_seconds: int = 0,
    container_concurrency: int = 0,
) -> dict[str, str]:
    """The environment of queue-proxy in a pod of ``revision`` on Knative ``version``."""
    catalog.resolve(version)  # CatalogError for a version nobody read queue.go at
    probe = {"tcpSocket": {"port": user_port, "host": "127.0.0.1"}, "successThreshold": 1}
    every = {
        "SERVING_NAMESPACE": namespace,
        "SERVING_SERVICE": service,
        "SERVING_CONFIGURATION": service,
        "SERVING_REVISION": revision,
        "QUEUE_SERVING_PORT": str(serving_port),
        "QUEUE_SERVING_TLS_PORT": str(tls_port),
        "CONTAINER_CONCURRENCY": str(container_concurrency),
        "REVISION_TIMEOUT_SECONDS": str(timeout_seconds),
        "MAX_DURATION_SECONDS": "0",
        "REVISION_RESPONSE_START_TIMEOUT_SECONDS": str(response_start_timeout_seconds),
        "REVISION_IDLE_TIMEOUT_SECONDS": str(idle_timeout_seconds),
        "SERVING_POD": pod,
        "SERVING_POD_IP": pod_ip,
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "info",
        "SERVING_REQUEST_LOG_TEMPLATE": "",
        "SERVING_ENABLE_REQUEST_LOG": "false",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "SERVING_REQUEST_METRICS_REPORTING_PERIOD_SECONDS": "5",
        "TRACING_CONFIG_BACKEND": "none",
        "TRACING_CONFIG_ZIPKIN_ENDPOINT": "",
        "TRACING_CONFIG_DEBUG": "false",
        "TRACING_CONFIG_SAMPLE_RATE": "0.1",
        "USER_PORT": str(user_port),
        "SYSTEM_NAMESPACE": "knative-serving",
        "METRICS_DOMAIN": "knative.dev/internal/serving",
        "SERVING_READINESS_PROBE": json.dumps(probe, separators=(",", ":")),
        "ENABLE_PROFILING": "false",
        "SERVING_ENABLE_PROBE_REQUEST_LOG": "false",
        "METRICS_COLLECTOR_ADDRESS": "",
        "CONCURRENCY_STATE_ENDPOINT": "",
        "CONCURRENCY_STATE_TOKEN_PATH": "/var/run/secrets/tokens/state-token",
        "ENABLE_HTTP2_AUTO_DETECTION": "false",
        "ENABLE_HTTP_FULL_DUPLEX": "false",
        "ROOT_CA": "",
        "ENABLE_MULTI_CONTAINER_PROBES": "false",
    }
    return {name: value for name, value in every.items() if sets(name, version)}
