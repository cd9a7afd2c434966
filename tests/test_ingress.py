"""Where the ingress is (platforms/cluster/ingress.py) and when a port-forward's breaking
makes a case no verdict (runner.forward_broke).

Discovery reads real objects from a real kube-apiserver: the Service as net-kourier's
manifest declares it (the API server allocates its NodePort), nodes with the addresses and
Ready condition a kubelet would report, and the LoadBalancer status a cloud controller
writes. The forward is a real TCP relay on loopback that is stopped mid-load, as
``kubectl port-forward`` exits on an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kube_apiserver
import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from misbehaving_servers import LoopbackServer, Relay

from pytest_knative_drain import load
from pytest_knative_drain.platforms.cluster import api as cluster
from pytest_knative_drain.platforms.cluster import ingress
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.existing import choose_ingress
from pytest_knative_drain.run.runner import forward_broke


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://172.18.0.2:31080", "http://172.18.0.2:31080"),
        ("http://gw.example.com/", "http://gw.example.com"),
        (" http://10.0.0.5:80 ", "http://10.0.0.5:80"),
        ("http://[fd00::1]:8080", "http://[fd00::1]:8080"),
    ],
)
def test_ingress_url_is_normalised(given: str, url: str) -> None:
    assert ingress.parse_ingress_url(given) == url


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("https://gw.example.com", "https is not supported"),
        ("gw.example.com:80", "http://HOST[:PORT]"),
        ("http://:80", "no host"),
        ("http://gw:0x50", "1 to 65535"),
        ("http://gw/apps", "Host header"),
        ("http://user:pw@gw", "credentials"),
    ],
)
def test_bad_ingress_urls_say_why(given: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        ingress.parse_ingress_url(given)


def test_loopback_is_told_apart() -> None:
    assert ingress.is_loopback("http://127.0.0.1:31080")
    assert ingress.is_loopback("http://localhost:8080")
    assert not ingress.is_loopback("http://172.18.0.2:31080")
    assert not ingress.is_loopback("http://gw.example.com")


# -- discovery on a real API server --------------------------------------------------------
@pytest.fixture(scope="module")
def api() -> Iterator[k8s.ApiClient]:
    server = kube_apiserver.private_server()
    client = cluster.api_client(server.kubeconfig, server.context)
    core = k8s.CoreV1Api(client)
    for ns in ("knative-serving", "kourier-system"):
        core.create_namespace({"metadata": {"name": ns}})
    yield client
    client.close()
    server.stop()


def _network(core: k8s.CoreV1Api, ingress_class: str | None) -> None:
    data = {"ingress-class": ingress_class} if ingress_class else {}
    body = {"metadata": {"name": "config-network"}, "data": data}
    try:
        core.create_namespaced_config_map("knative-serving", body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_config_map("config-network", "knative-serving", body)


def _node(core: k8s.CoreV1Api, name: str, addresses: dict[str, str], ready: bool) -> None:
    with contextlib.suppress(ApiException):
        core.delete_node(name)
    core.create_node({"metadata": {"name": name}})
    status = {
        "addresses": [{"type": t, "address": a} for t, a in addresses.items()],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    core.patch_node_status(name, {"status": status})


def _kourier(core: k8s.CoreV1Api) -> k8s.V1Service:
    """The gateway Service as net-kourier config/300-kourier.yaml declares it."""
    with contextlib.suppress(ApiException):
        core.delete_namespaced_service("kourier", "kourier-system")
    return core.create_namespaced_service(
        "kourier-system",
        {
            "metadata": {"name": "kourier"},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app": "3scale-kourier-gateway"},
                "ports": [
                    {"name": "http2", "port": 80, "targetPort": 8080},
                    {"name": "https", "port": 443, "targetPort": 8443},
                ],
            },
        },
    )


def test_a_node_address_and_the_nodeport_without_a_load_balancer(api) -> None:
    core = k8s.CoreV1Api(api)
    _network(core, "kourier.ingress.networking.knative.dev")
    _node(core, "a-not-ready", {"InternalIP": "172.18.0.9"}, ready=False)
    _node(core, "b-worker", {"InternalIP": "172.18.0.3"}, ready=True)
    node_port = next(p.node_port for p in _kourier(core).spec.ports if p.name == "http2")
    found = ingress.discover(api)
    assert found.url == f"http://172.18.0.3:{node_port}"
    assert "node b-worker" in found.how and f"NodePort {node_port}" in found.how
    assert "kourier-system/kourier" in found.how and not found.forwarded
    # an ExternalIP is what clients outside the cluster reach: it wins over the InternalIP
    _node(core, "b-worker", {"InternalIP": "172.18.0.3", "ExternalIP": "172.18.0.30"}, True)
    assert ingress.discover(api).url == f"http://172.18.0.30:{node_port}"


def test_the_load_balancer_address_wins(api) -> None:
    core = k8s.CoreV1Api(api)
    _network(core, None)  # unset: Kourier, as Serving's own default in kind installs
    _node(core, "b-worker", {"InternalIP": "172.18.0.3"}, ready=True)
    _kourier(core)
    core.patch_namespaced_service_status(
        "kourier",
        "kourier-system",
        {"status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.200"}]}}},
    )
    found = ingress.discover(api)
    assert found.url == "http://172.18.0.200:80"
    assert found.how == "LoadBalancer of Service kourier-system/kourier, port 80"


def test_what_cannot_be_found_says_which_option_to_pass(api) -> None:
    core = k8s.CoreV1Api(api)
    _network(core, "gateway-api.ingress.networking.knative.dev")
    with pytest.raises(ClusterError, match="gateway-api.*--ingress-url=http://HOST:PORT"):
        ingress.discover(api)
    _network(core, "istio.ingress.networking.knative.dev")
    with pytest.raises(ClusterError, match="istio-system/istio-ingressgateway not found"):
        choose_ingress(api, None, None)
    # what the user gives is taken as given, with no cluster lookup
    assert choose_ingress(api, None, 18080).url == "http://127.0.0.1:18080"
    assert choose_ingress(api, None, 18080).forwarded
    given = choose_ingress(api, "http://gw.example.com:8080/", None)
    assert (given.url, given.forwarded) == ("http://gw.example.com:8080", False)
    assert choose_ingress(api, "http://localhost:9000", None).forwarded


# -- a port-forward that breaks mid-case ----------------------------------------------------
class Through:
    """A case's target as the runner sees it: its URL and whether it is a port-forward."""

    def __init__(self, url: str, forwarded: bool) -> None:
        self.url = url
        self.ingress_forwarded = forwarded


def _load(url: str, stop: Relay | None) -> list:
    """6 requests of 1.5 s at once, then 4 more at 2 s; the relay stopped at 0.7 s."""
    batches = [
        load.Batch("held", 6, 0.0, "/?sleep=1500"),
        load.Batch("after", 4, 2.0, "/?sleep=100"),
    ]
    events = [load.Event("forward exits", 0.7, stop.stop)] if stop else []
    return load.run_schedule_sync(url, batches, events, timeout_s=10).records


def test_a_forward_that_exits_mid_case_is_no_verdict() -> None:
    with LoopbackServer("ok") as backend:
        relay = Relay(backend.port)
        records = _load(relay.url, relay)
    why = forward_broke(Through(relay.url, forwarded=True), records)
    assert why is not None and f"the port-forward at {relay.url} broke" in why
    assert "10 of 10 requests failed" in why and "no verdict" in why
    # the same records through an address that is no forward (a NodePort, a LoadBalancer)
    # are Knative's to answer for: judged as usual
    assert forward_broke(Through(relay.url, forwarded=False), records) is None


def test_failures_through_a_forward_that_still_answers_are_judged() -> None:
    """A 502 from behind a live forward is the cluster's answer, not the forward's."""
    with LoopbackServer("bad_gateway") as backend:
        relay = Relay(backend.port)
        try:
            records = _load(relay.url, None)
            assert forward_broke(Through(relay.url, forwarded=True), records) is None
        finally:
            relay.stop()
    with LoopbackServer("ok") as backend:
        relay = Relay(backend.port)
        try:
            records = _load(relay.url, None)  # nothing failed: nothing to explain
            assert forward_broke(Through(relay.url, forwarded=True), records) is None
        finally:
            relay.stop()
