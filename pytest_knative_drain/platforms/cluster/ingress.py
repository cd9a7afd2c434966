"""Where a cluster's Knative ingress answers, as a vendor's clients reach it.

Why not a port-forward by default: ``kubectl port-forward`` pins one gateway pod, carries
every connection through the API server and the kubelet, and since Kubernetes 1.23 exits on
any error on any of its connections (kubectl#1169, #1368; kubernetes#111825). A 5-minute
request cut by the forward would be blamed on Knative. Knative's own kind CI points its
tests at a node address and NodePort (``-ingressendpoint``); real clusters have a
LoadBalancer. So the address is, in this order:

1. ``--ingress-url`` as given;
2. ``--ingress-port``: 127.0.0.1 on that port (a port-forward the user runs);
3. read from the cluster: config-network's ingress class names the gateway Service; its
   LoadBalancer address (status.loadBalancer) and HTTP port, else a Ready node's address
   (ExternalIP, else InternalIP) and the Service's NodePort.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from .api import REQUEST_TIMEOUT, SERVING_NAMESPACE, ClusterError, api_call

#: ingress class (config-network) -> gateway Services its installs create, in the order
#: tried: net-kourier config/300-kourier.yaml (and OpenShift Serverless' namespace), Istio's
#: ingress gateway, net-contour's external Envoy
GATEWAYS: dict[str, tuple[tuple[str, str], ...]] = {
    "kourier.ingress.networking.knative.dev": (
        ("kourier-system", "kourier"),
        ("knative-serving-ingress", "kourier"),
    ),
    "istio.ingress.networking.knative.dev": (("istio-system", "istio-ingressgateway"),),
    "contour.ingress.networking.knative.dev": (("contour-external", "envoy"),),
}
#: the Service port that carries plain HTTP, by name, else by number
HTTP_PORT_NAMES = ("http2", "http", "http-80")
HTTP_PORT = 80
INGRESS_URL_OPTION = "--ingress-url"
INGRESS_PORT_OPTION = "--ingress-port"


@dataclass(frozen=True)
class IngressAddress:
    """The base URL requests go to (the Knative Service is picked by its Host header)."""

    url: str  # "http://172.18.0.2:31080", no trailing slash
    how: str  # how it was chosen, for the report and the run's first lines
    #: a loopback port the user forwards (--ingress-port): its breaking is infrastructure
    forwarded: bool = False

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or HTTP_PORT

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "how": self.how, "port_forward": self.forwarded}


def parse_ingress_url(value: str) -> str:
    """``http://HOST[:PORT]`` normalised (no path, no trailing slash); ValueError says why.

    Only cleartext HTTP: the suite measures Knative's drain, and a TLS ingress needs a
    certificate for every ksvc's host that this run cannot know (use the gateway's HTTP
    port, as Knative's own e2e tests do).
    """
    text = value.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http":
        raise ValueError("expected http://HOST[:PORT] (cleartext HTTP; https is not supported)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("no host: expected http://HOST[:PORT]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            "only scheme, host and port: the Knative Service is chosen by its Host header, "
            "so a path, query or credentials cannot apply"
        )
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"http://{host}" + (f":{port}" if port else "")


def forwarded(port: int) -> IngressAddress:
    """127.0.0.1:``port``, where the user forwards the ingress (or kind maps its NodePort)."""
    return IngressAddress(
        f"http://127.0.0.1:{port}", f"{INGRESS_PORT_OPTION}={port} (a port-forward)", True
    )


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is a loopback address or ``localhost``."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ingress_class(api: k8s.ApiClient) -> str:
    """config-network's ingress class (``ingress-class`` overrides the legacy
    ``ingress.class``, as knative.dev/networking pkg/config reads them); Kourier if unset."""
    core = k8s.CoreV1Api(api)
    try:
        cm = core.read_namespaced_config_map(
            "config-network", SERVING_NAMESPACE, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return next(iter(GATEWAYS))
        raise ClusterError(
            f"read {SERVING_NAMESPACE}/config-network: {exc.status} {exc.reason}"
        ) from None
    data = cm.data or {}
    return (data.get("ingress-class") or data.get("ingress.class") or next(iter(GATEWAYS))).strip()


def discover(api: k8s.ApiClient) -> IngressAddress:
    """The ingress address read from the cluster (see the module docstring), or a
    ClusterError that says which option to pass instead."""
    klass = ingress_class(api)
    candidates = GATEWAYS.get(klass)
    if candidates is None:
        raise ClusterError(
            f"config-network ingress class {klass!r}: this run does not know its gateway "
            f"Service (known: {', '.join(GATEWAYS)}); pass {INGRESS_URL_OPTION}=http://HOST:PORT"
        )
    core = k8s.CoreV1Api(api)
    tried: list[str] = []
    for namespace, name in candidates:
        with api_call(f"read Service {namespace}/{name}", api):
            try:
                service = core.read_namespaced_service(
                    name, namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    tried.append(f"{namespace}/{name}")
                    continue
                raise
        return _address_of(api, service, f"{namespace}/{name}")
    raise ClusterError(
        f"ingress class {klass}: no gateway Service ({', '.join(tried)} not found); pass "
        f"{INGRESS_URL_OPTION}=http://HOST:PORT, or {INGRESS_PORT_OPTION}=N with a port-forward"
    )


def _http_port(service: k8s.V1Service) -> k8s.V1ServicePort | None:
    ports = list(service.spec.ports or [])
    for wanted in HTTP_PORT_NAMES:
        for port in ports:
            if port.name == wanted:
                return port
    return next((p for p in ports if p.port == HTTP_PORT), None)


def _address_of(api: k8s.ApiClient, service: k8s.V1Service, where: str) -> IngressAddress:
    port = _http_port(service)
    if port is None:
        raise ClusterError(
            f"Service {where} has no HTTP port (named {'/'.join(HTTP_PORT_NAMES)} or "
            f"{HTTP_PORT}); pass {INGRESS_URL_OPTION}=http://HOST:PORT"
        )
    lb = service.status.load_balancer if service.status else None
    for entry in (lb.ingress if lb and lb.ingress else []) or []:
        host = entry.ip or entry.hostname
        if host:
            url = parse_ingress_url(f"http://{_bracket(host)}:{port.port}")
            return IngressAddress(url, f"LoadBalancer of Service {where}, port {port.port}")
    if port.node_port:
        name, address = _node_address(api)
        url = parse_ingress_url(f"http://{_bracket(address)}:{port.node_port}")
        return IngressAddress(url, f"node {name} and NodePort {port.node_port} of Service {where}")
    raise ClusterError(
        f"Service {where} ({service.spec.type}) has no LoadBalancer address and no NodePort; "
        f"pass {INGRESS_URL_OPTION}=http://HOST:PORT, or {INGRESS_PORT_OPTION}=N with a "
        "port-forward"
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _node_address(api: k8s.ApiClient) -> tuple[str, str]:
    """(name, address) of the first Ready, schedulable node by name: its ExternalIP, else
    its InternalIP (kube-proxy serves a NodePort on every node)."""
    with api_call("list nodes for the ingress NodePort", api):
        nodes = k8s.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT).items
    ready = [n for n in nodes if _ready(n)]
    ready.sort(key=lambda n: (bool(n.spec and n.spec.unschedulable), n.metadata.name))
    for node in ready:
        by_type = {a.type: a.address for a in (node.status.addresses or [])}
        address = by_type.get("ExternalIP") or by_type.get("InternalIP")
        if address:
            return node.metadata.name, address
    raise ClusterError(
        f"no Ready node with an address for the ingress NodePort ({len(nodes)} nodes); pass "
        f"{INGRESS_URL_OPTION}=http://HOST:PORT"
    )


def _ready(node: k8s.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def unreachable(url: str, timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to ``url``'s host and port opens, else why not."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or HTTP_PORT
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
