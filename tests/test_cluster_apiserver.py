"""Cluster code against a real kube-apiserver + etcd, with Knative's own CRDs and ConfigMaps.

The Knative objects come from the knative.dev/serving v0.41.2 module source (= Knative
1.14.2) and the knative.dev/caching module it requires (the queue-proxy Image CRD). No
kubelet or controllers run: these tests check what the API server decides (schemas,
admission webhooks, CRD establishment, discovery, apply semantics, namespaces).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kube_apiserver
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from pytest_knative_drain.platforms.cluster import api as cluster
from pytest_knative_drain.platforms.cluster import changes
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.cluster.apply import Applier, ObjectRef
from pytest_knative_drain.platforms.cluster.changes import ConfigMapPatch, Namespaces
from pytest_knative_drain.platforms.cluster.ksvc import KsvcSpec, render_ksvc

SERVING = ("knative.dev/serving", "v0.41.2")


def _docs(*paths: Path) -> list[dict]:
    out: list[dict] = []
    for path in paths:
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


@pytest.fixture(scope="session")
def kube(pytestconfig: pytest.Config) -> kube_apiserver.KubeApiServer:
    return kube_apiserver.session_server(pytestconfig)


@pytest.fixture
def api(kube: kube_apiserver.KubeApiServer) -> Iterator[k8s.ApiClient]:
    client = cluster.api_client(kube.kubeconfig, kube.context)
    yield client
    client.close()


@pytest.fixture(scope="session")
def serving_src() -> Path:
    try:
        return kube_apiserver.go_module_dir(*SERVING)
    except kube_apiserver.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def caching_src(serving_src: Path) -> Path:
    gomod = (serving_src / "go.mod").read_text()
    version = next(
        line.split()[1]
        for line in gomod.splitlines()
        if line.strip().startswith("knative.dev/caching ")
    )
    return kube_apiserver.go_module_dir("knative.dev/caching", version)


@pytest.fixture(scope="session")
def knative_core(kube, serving_src: Path, caching_src: Path) -> dict[str, object]:
    """Knative 1.14.2's CRDs, namespace, Image CR and two ConfigMaps, applied once.

    Documents go in the worst order (Image CR before every CRD) to prove the applier
    orders CRDs first, waits for Established and refreshes discovery.
    """
    core = serving_src / "config" / "core"
    crds = _docs(
        *sorted((core / "300-resources").glob("*.yaml")), caching_src / "config" / "image.yaml"
    )
    image = _docs(core / "999-cache.yaml")
    rest = _docs(
        core / "100-namespace.yaml",
        core / "configmaps" / "defaults.yaml",
        core / "configmaps" / "autoscaler.yaml",
    )
    api = cluster.api_client(kube.kubeconfig, kube.context)
    notes: list[str] = []
    started = time.monotonic()
    with Applier(api, progress=notes.append) as applier:
        refs = applier.apply(image + rest + crds)
        image_obj = applier.get(_find(refs, "Image"))
    return {"refs": refs, "image": image_obj, "crds": crds, "seconds": time.monotonic() - started}


def _find(refs: list[ObjectRef], kind: str) -> ObjectRef:
    return next(r for r in refs if r.kind == kind)


def test_knative_crds_then_image_custom_resource(knative_core, api) -> None:
    refs = knative_core["refs"]
    kinds = [r.kind for r in refs]
    assert kinds[0] == "Namespace"  # namespaces first, then CRDs, then the rest
    n_crds = len(knative_core["crds"])
    assert n_crds == 8  # 7 serving CRDs + caching's Image
    assert kinds[1 : 1 + n_crds] == ["CustomResourceDefinition"] * n_crds
    ext = k8s.ApiextensionsV1Api(api)
    for doc in knative_core["crds"]:
        crd = ext.read_custom_resource_definition(doc["metadata"]["name"])
        assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    image = knative_core["image"]
    assert image["metadata"]["namespace"] == "knative-serving"
    assert image["spec"]["image"] == "ko://knative.dev/serving/cmd/queue"
    cms = k8s.CoreV1Api(api).list_namespaced_config_map("knative-serving").items
    assert {"config-defaults", "config-autoscaler"} <= {c.metadata.name for c in cms}


def test_namespaced_object_never_lands_in_default(knative_core, api) -> None:
    name = f"nsless-{uuid.uuid4().hex[:6]}"
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}
    core = k8s.CoreV1Api(api)
    namespaces = Namespaces(api, "test-run")
    with Applier(api) as applier, namespaces.scoped("apply") as ns:
        with pytest.raises(ClusterError, match="refusing to put it into 'default'"):
            applier.apply([doc])
        with pytest.raises(ApiException) as missing:
            core.read_namespaced_config_map(name, "default")
        assert missing.value.status == 404
        [ref] = applier.apply([doc], namespace=ns)
        assert ref.namespace == ns
        assert core.read_namespaced_config_map(name, ns).data == {"a": "1"}
        other = {**doc, "metadata": {"name": name, "namespace": "elsewhere"}}
        with pytest.raises(ClusterError, match="differs from the target namespace"):
            applier.apply([other], namespace=ns)
        # Applying again is idempotent (server-side apply), and a changed value wins.
        applier.apply([{**doc, "data": {"a": "2"}}], namespace=ns)
        assert core.read_namespaced_config_map(name, ns).data == {"a": "2"}


def test_unknown_kind_names_the_missing_crd(api) -> None:
    doc = {"apiVersion": "example.invalid/v1", "kind": "Nope", "metadata": {"name": "x"}}
    with (
        Applier(api, discovery_timeout_s=1) as applier,
        pytest.raises(ClusterError, match="serves no Nope in example.invalid/v1"),
    ):
        applier.apply([doc], namespace="default")


def test_ksvc_from_template_survives_the_crd_schema(knative_core, api) -> None:
    spec = KsvcSpec(
        name="sleeper",
        image="dev.local/sleeper:1",
        timeout_seconds=600,
        container_concurrency=10,
        min_scale=2,
        max_scale=3,
        target_burst_capacity=-1,
        env={"SLEEP_DEFAULT": "1"},
        annotations={"autoscaling.knative.dev/window": "6s"},
        port_name="h2c",
    )
    with Applier(api) as applier, Namespaces(api, "test-run").scoped("ksvc") as ns:
        [ref] = applier.apply([render_ksvc(spec, ns)])
        live = applier.get(ref)
    # Fields the CRD's structural schema does not know would be pruned silently.
    template = live["spec"]["template"]
    assert template["spec"]["timeoutSeconds"] == 600
    assert template["spec"]["containerConcurrency"] == 10
    assert template["spec"]["containers"][0]["image"] == "dev.local/sleeper:1"
    assert template["spec"]["containers"][0]["env"] == [{"name": "SLEEP_DEFAULT", "value": "1"}]
    # Knative reads the protocol from the port name: h2c carries gRPC end to end
    [port] = template["spec"]["containers"][0]["ports"]
    assert (port["containerPort"], port["name"]) == (8080, "h2c")
    assert template["metadata"]["annotations"] == {
        "autoscaling.knative.dev/min-scale": "2",
        "autoscaling.knative.dev/max-scale": "3",
        "autoscaling.knative.dev/target-burst-capacity": "-1",
        "autoscaling.knative.dev/window": "6s",
    }


def test_ksvc_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ClusterError, match=r"max_scale=1: >= min_scale \(2\) or 0"):
        render_ksvc(KsvcSpec(name="a", image="i", min_scale=2, max_scale=1), "ns")
    with pytest.raises(ClusterError, match="timeout_seconds=0") as err:
        render_ksvc(
            KsvcSpec(name="Bad_Name", image="i", timeout_seconds=0, target_burst_capacity=-2), "n"
        )
    assert "name='Bad_Name'" in str(err.value) and "target_burst_capacity=-2" in str(err.value)
    with pytest.raises(ClusterError, match="port_name='h2': one of http1, h2c"):
        render_ksvc(KsvcSpec(name="a", image="i", port_name="h2"), "ns")


def test_configmap_patches_are_restored(knative_core, api) -> None:
    core = k8s.CoreV1Api(api)
    before = {
        n: core.read_namespaced_config_map(n, "knative-serving").data
        for n in ("config-defaults", "config-autoscaler")
    }
    defaults = {"revision-timeout-seconds": "900", "max-revision-timeout-seconds": "1200"}
    with (
        ConfigMapPatch(api, "config-defaults", defaults),
        ConfigMapPatch(
            api, "config-autoscaler", {"scale-to-zero-grace-period": "5s", "_example": "changed"}
        ),
    ):
        patched = core.read_namespaced_config_map("config-defaults", "knative-serving").data
        assert {k: patched[k] for k in defaults} == defaults
        auto = core.read_namespaced_config_map("config-autoscaler", "knative-serving").data
        assert auto["_example"] == "changed"
    after = {
        n: core.read_namespaced_config_map(n, "knative-serving").data
        for n in ("config-defaults", "config-autoscaler")
    }
    assert after == before  # new keys removed, changed key restored
    with pytest.raises(ClusterError, match="does not exist"):
        ConfigMapPatch(api, "config-nope", {"a": "b"}).apply()


def test_webhook_500_while_starting_is_retried_bounded(knative_core, api, serving_src) -> None:
    """Knative's real config-validation webhook with no webhook Service behind it: the API
    server answers 500 "failed calling webhook", exactly as while the webhook starts."""
    [webhook] = _docs(serving_src / "config" / "core" / "webhooks" / "configmap-validation.yaml")
    # The shipped file has no rules: Knative's webhook fills them in when it starts
    # (knative/pkg webhook/configmaps reconciler). Give it the rule it would set.
    webhook["webhooks"][0]["rules"] = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["configmaps"],
            "scope": "Namespaced",
        }
    ]
    admission = k8s.AdmissionregistrationV1Api(api)
    with Applier(api) as applier:
        applier.apply([webhook])
    name = webhook["metadata"]["name"]
    core = k8s.CoreV1Api(api)

    @retry(
        stop=stop_after_delay(15), wait=wait_fixed(0.2), retry=retry_if_result(lambda e: e is None)
    )
    def webhook_active() -> ApiException | None:
        # The API server picks up webhook configurations through an informer (~1 s).
        try:
            core.patch_namespaced_config_map(
                "config-autoscaler", "knative-serving", {"data": {}}, dry_run="All"
            )
        except ApiException as exc:
            return exc
        return None

    try:
        raw = webhook_active()
        assert raw.status == 500 and cluster.webhook_starting(raw), raw.body
        started = time.monotonic()
        with pytest.raises(ClusterError, match="failed calling webhook") as err:
            ConfigMapPatch(
                api, "config-autoscaler", {"max-scale-up-rate": "100"}, webhook_timeout_s=3
            ).apply()
        assert time.monotonic() - started < 15  # bounded
        assert "still failing after 3 s" in str(err.value)
        # Webhook "becomes ready" (here: goes away) after ~2 s: the retry gets through.
        remover = threading.Timer(2.0, admission.delete_validating_webhook_configuration, [name])
        remover.start()
        notes: list[str] = []
        patch = ConfigMapPatch(
            api, "config-autoscaler", {"max-scale-up-rate": "100"}, progress=notes.append
        )
        patch.apply()
        remover.join()
        assert any("webhook not ready yet" in n for n in notes)
        patch.restore()
    finally:
        try:
            admission.delete_validating_webhook_configuration(name)
        except ApiException as exc:
            assert exc.status == 404


def test_namespace_per_test_is_labelled_and_deleted(api) -> None:
    core = k8s.CoreV1Api(api)
    spaces = Namespaces(api, "run-abc")
    with spaces.scoped("t") as ns:
        assert core.read_namespace(ns).metadata.labels[cluster.RUN_LABEL] == "run-abc"
    # No namespace controller here: deletion stops at Terminating (a cluster finishes it).
    gone = core.read_namespace(ns)
    assert gone.metadata.deletion_timestamp is not None and gone.status.phase == "Terminating"
    kept = Namespaces(api, "run-abc", keep=True)
    with kept.scoped("k") as kept_ns:
        pass
    assert core.read_namespace(kept_ns).status.phase == "Active"
    core.delete_namespace(kept_ns)


def test_wait_names_what_never_became_ready(api) -> None:
    apps = k8s.AppsV1Api(api)
    with Namespaces(api, "test-run").scoped("wait") as ns:
        labels = {"app": "never"}
        apps.create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "never"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "dev.local/x:1"}]},
                    },
                },
            },
        )
        started = time.monotonic()
        with pytest.raises(ClusterError, match=r"never 0/2 available"):
            cluster.wait_deployments_available(api, ns, timeout_s=2)
        with pytest.raises(ClusterError, match=r"no pods in .* matching '!job-name'"):
            cluster.wait_pods_ready(api, ns, timeout_s=1)
        assert time.monotonic() - started < 10


# -- an API server that is not there or never answers: one ClusterError, fast ---------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once we leave: nothing listens there


def _client(url: str) -> k8s.ApiClient:
    config = k8s.Configuration()
    config.host = url
    config.verify_ssl = False
    return k8s.ApiClient(config)


def _no_traceback_line(err: pytest.ExceptionInfo[ClusterError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "object at 0x" not in message, message
    assert err.value.__cause__ is None and err.value.__suppress_context__, "no chained traceback"
    return message


def test_unreachable_api_server_is_one_cluster_error_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "CLEANUP_RETRY_S", 0.0)  # cleanup asks again: not here
    url = f"https://127.0.0.1:{_closed_port()}"
    api = _client(url)
    calls = {
        "read /version": lambda: cluster.kubernetes_version(api),
        "detect the Knative Serving version": lambda: cluster.knative_serving_version(api),
        "create namespace": lambda: Namespaces(api, "run-x").create("x"),
        "delete namespace gone-1": lambda: Namespaces(api, "run-x").delete("gone-1"),
        "discover the API server's resources": lambda: Applier(api),
        "read ConfigMap knative-serving/config-defaults": lambda: ConfigMapPatch(
            api, "config-defaults", {"a": "1"}
        ).apply(),
        "pods in ns-x: not ready after 1 s": lambda: cluster.wait_pods_ready(
            api, "ns-x", timeout_s=1
        ),
        "CRDs Established: not ready after 1 s": lambda: cluster.wait_crds_established(
            api, ["x.example.com"], timeout_s=1
        ),
    }
    for doing, call in calls.items():
        started = time.monotonic()
        with pytest.raises(ClusterError) as err:
            call()
        message = _no_traceback_line(err)
        assert doing in message, message
        assert f"cannot reach the API server {url}" in message, message
        assert "Connection refused" in message or "refused" in message.lower(), message
        assert time.monotonic() - started < 5, (doing, time.monotonic() - started)
    api.close()


def test_api_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listening socket nobody accepts on: without _request_timeout the call would hang."""
    monkeypatch.setattr(cluster, "REQUEST_TIMEOUT", (0.5, 0.5))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        api = _client(url)
        started = time.monotonic()
        with pytest.raises(ClusterError, match=f"cannot reach the API server {url}") as err:
            cluster.knative_serving_version(api)
        _no_traceback_line(err)
        assert time.monotonic() - started < 10  # urllib3 retries a GET 3 times: 4 x 0.5 s
        api.close()


def _forward_later(port: int, to: str, after_s: float, stop: threading.Event) -> None:
    """Listen on ``port`` only ``after_s`` from now, then relay each connection to ``to``."""
    host, to_port = to.removeprefix("https://").rsplit(":", 1)
    time.sleep(after_s)
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                down, _ = server.accept()
            except TimeoutError:
                continue
            up = socket.create_connection((host, int(to_port)))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def test_cleanup_asks_again_until_the_api_server_is_back(kube, api) -> None:
    """The API server unreachable when a case ends (the fault that ended it, a restart):
    the namespace is still deleted once it answers again within CLEANUP_RETRY_S."""
    core = k8s.CoreV1Api(api)
    spaces = Namespaces(api, "run-back")
    ns = spaces.create("back")
    port = _closed_port()
    # by hand: a kubeconfig client puts its server back into the configuration on each call
    late = _client(f"https://127.0.0.1:{port}")
    late.set_default_header("Authorization", f"Bearer {kube_apiserver.TOKEN}")
    stop = threading.Event()
    relay = threading.Thread(target=_forward_later, args=(port, kube.url, 4.0, stop), daemon=True)
    relay.start()
    started = time.monotonic()
    try:
        Namespaces(late, "run-back").delete(ns)  # refused at first: asked again, then deleted
        took = time.monotonic() - started
    finally:
        stop.set()
        relay.join(5)
        late.close()
    assert 4.0 <= took < 4.0 + changes.CLEANUP_INTERVAL_S + 5, took
    assert core.read_namespace(ns).metadata.deletion_timestamp is not None


def test_capacity_counts_unrequested_cpu_on_schedulable_nodes(api) -> None:
    """One kind node as measured (2 CPUs, 1850m requested by the control plane, Knative and
    Kourier): 6 revision pods of 25m fit, so one rollout case (4 pods at its peak) at once."""
    from pytest_knative_drain.platforms.cluster.capacity import fitting_cases, read_capacity

    core = k8s.CoreV1Api(api)
    node, cordoned, tainted = "cap-node-a", "cap-node-b", "cap-node-c"
    control_plane = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    for name, spec in (
        (node, {}),
        (cordoned, {"unschedulable": True}),
        (tainted, {"taints": [control_plane]}),  # kind's control plane beside a worker
    ):
        core.create_node({"metadata": {"name": name}, "spec": spec})
        # a node created through the API gets not-ready:NoSchedule (TaintNodesByCondition);
        # kubelet's Ready node would not have it: keep only the taints of the case
        made = core.read_node(name)
        made.spec.taints = spec.get("taints") or None
        core.replace_node(name, made)
        core.patch_node_status(name, {"status": {"allocatable": {"cpu": "2", "pods": "110"}}})

    def pod(name: str, on: str, cpu: str) -> dict:
        container = {"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}
        return {"metadata": {"name": name}, "spec": {"nodeName": on, "containers": [container]}}

    with Namespaces(api, "test-run").scoped("cap") as ns:
        # no controller-manager here to make the namespace's default service account
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        try:
            core.create_namespaced_pod(ns, pod("control-plane", node, "1.5"))
            core.create_namespaced_pod(ns, pod("knative", node, "350m"))
            core.create_namespaced_pod(ns, pod("elsewhere", cordoned, "1"))  # not schedulable
            core.create_namespaced_pod(ns, pod("done", node, "1"))
            core.patch_namespaced_pod_status("done", ns, {"status": {"phase": "Succeeded"}})
            capacity = read_capacity(api)
        finally:
            for name in ("control-plane", "knative", "elsewhere", "done"):
                with contextlib.suppress(ApiException):
                    core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            for name in (node, cordoned, tainted):
                core.delete_node(name)
    assert (capacity.unrequested_m, capacity.pod_request_m, capacity.nodes) == (150, 25, 1)
    assert capacity.pods == 6
    assert fitting_cases(capacity, 4) == 1 and fitting_cases(capacity, 2) == 3
