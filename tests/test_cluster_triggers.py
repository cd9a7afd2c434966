"""Cluster triggers and Knative config patches against a real kube-apiserver.

No kubelet, scheduler or Knative controller runs. What the API server alone decides is
asserted as it is: eviction of a bound pod only sets deletionTimestamp, a
PodDisruptionBudget nobody computed refuses evictions with 429, a Deployment nobody
reconciles never rolls. Where a test needs what a controller or kubelet would write (a
Ready pod, the disruption controller's PDB status, the Deployment controller's status,
the removal of a pod whose containers ended), it writes exactly that through the API, the
way those components do, and says so. Knative's own activator Deployment, HPA and PDB
come from the knative.dev/serving v0.41.2 (Knative 1.14.2) source.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import test_cluster_apiserver as base
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import retry, stop_after_delay, wait_fixed

from pytest_knative_drain.builders import images
from pytest_knative_drain.matrix.configs import CONFIGS
from pytest_knative_drain.matrix.scenarios import SCENARIOS, TRIGGERS
from pytest_knative_drain.platforms.cluster import triggers as ct
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.cluster.apply import Applier
from pytest_knative_drain.platforms.cluster.changes import Namespaces
from pytest_knative_drain.platforms.cluster.ingress import forwarded
from pytest_knative_drain.platforms.cluster.knative_config import KnativeConfigPatch, patch_for
from pytest_knative_drain.platforms.cluster.knative_pod import KnativePod
from pytest_knative_drain.platforms.cluster.ksvc import KsvcSpec, render_ksvc
from pytest_knative_drain.platforms.existing import ClusterConfigRefused, ExistingPlatform

kube, api, serving_src, caching_src, knative_core = (
    base.kube, base.api, base.serving_src, base.caching_src, base.knative_core
)  # fmt: skip

#: a port-forward on loopback: these tests make no request, so no gateway need be found
LOOPBACK = forwarded(31080)
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


@pytest.fixture
def ns(api) -> Iterator[str]:
    namespaces = Namespaces(api, "run-triggers")
    name = namespaces.create("trig")
    k8s.CoreV1Api(api).create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    yield name
    namespaces.close()


def _node(api, name: str) -> str:
    core = k8s.CoreV1Api(api)
    try:
        core.create_node({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return name


def _pod(api, ns: str, name: str, *, node: str | None, labels=None, **meta) -> str:
    """A pod bound to ``node`` (as the scheduler would), made Ready (as kubelet would)."""
    core = k8s.CoreV1Api(api)
    body = {
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "spec": {
            "containers": [{"name": "user-container", "image": "i"}],
            "terminationGracePeriodSeconds": 30,
            **({"nodeName": node} if node else {}),
        },
    }
    core.create_namespaced_pod(ns, body)
    core.patch_namespaced_pod_status(
        name,
        ns,
        {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "user-container", "image": "i", "imageID": "", "ready": True,
                     "restartCount": 0, "state": RUNNING}
                ],
            }
        },
    )  # fmt: skip
    return name


def _terminating(api, ns: str, name: str) -> bool:
    pod = k8s.CoreV1Api(api).read_namespaced_pod(name, ns)
    return pod.metadata.deletion_timestamp is not None


# -- the API calls ------------------------------------------------------------------------
def test_drain_node_cordons_and_evicts_like_kubectl_drain(api, ns) -> None:
    node = _node(api, f"node-{uuid.uuid4().hex[:5]}")
    other = _node(api, f"node-{uuid.uuid4().hex[:5]}")
    _pod(api, ns, "app", node=node)
    _pod(api, ns, "elsewhere", node=other)
    _pod(api, ns, "static", node=node, annotations={ct.MIRROR_ANNOTATION: "x"})
    daemon_owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds",
                    "uid": str(uuid.uuid4()), "controller": True}  # fmt: skip
    _pod(api, ns, "daemon", node=node, ownerReferences=[daemon_owner])
    tenant = f"tenant-{uuid.uuid4().hex[:5]}"  # another namespace's pod on the same node
    core = k8s.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": tenant}})
    core.create_namespaced_service_account(tenant, {"metadata": {"name": "default"}})
    _pod(api, tenant, "neighbour", node=node)

    evicted = ct.drain_node(api, node, ns)

    assert evicted == [f"{ns}/app"]
    assert not _terminating(api, tenant, "neighbour")  # only the namespace under test
    assert core.read_node(node).spec.unschedulable is True
    assert _terminating(api, ns, "app")  # bound: the API server waits for a kubelet
    for name in ("elsewhere", "static", "daemon"):
        assert not _terminating(api, ns, name), name
    ct.set_unschedulable(api, node, False)
    assert not core.read_node(node).spec.unschedulable
    core.delete_namespace(tenant)


def test_drain_node_waits_for_a_disruption_budget_then_evicts(api, ns) -> None:
    node = _node(api, f"node-{uuid.uuid4().hex[:5]}")
    _pod(api, ns, "guarded", node=node, labels={"app": "guarded"})
    policy = k8s.PolicyV1Api(api)
    policy.create_namespaced_pod_disruption_budget(
        ns,
        {"metadata": {"name": "pdb"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}},
    )  # fmt: skip
    # Nobody computed the budget: every eviction is refused (429) until the retry ends.
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"eviction of .*/guarded still refused after 3 s"):
        ct.drain_node(api, node, ns, retry_s=3)
    assert time.monotonic() - started < 15
    assert not _terminating(api, ns, "guarded")

    notes: list[str] = []

    def disruption_controller() -> None:  # what it writes once a disruption is allowed
        time.sleep(3)
        pdb = policy.read_namespaced_pod_disruption_budget("pdb", ns)
        policy.patch_namespaced_pod_disruption_budget_status(
            "pdb",
            ns,
            {"status": {"observedGeneration": pdb.metadata.generation, "disruptionsAllowed": 1,
                        "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}},
        )  # fmt: skip

    helper = threading.Thread(target=disruption_controller)
    helper.start()
    assert ct.drain_node(api, node, ns, retry_s=30, progress=notes.append) == [f"{ns}/guarded"]
    helper.join()
    assert _terminating(api, ns, "guarded")
    assert any("refused by a PodDisruptionBudget" in n for n in notes)


def _revision(api, ns: str, name: str, service: str) -> None:
    """A Revision as the configuration reconciler makes it (metadata and a container)."""
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "serving.knative.dev", "v1", ns, "revisions",
        {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
         "metadata": {"name": name, "labels": {ct.SERVICE_LABEL: service}},
         "spec": {"containers": [{"image": "dev.local/app:1"}]}},
    )  # fmt: skip


def test_scale_revision_patches_the_pod_autoscaler_and_from_1_21_the_revision(
    api, knative_core, ns
) -> None:
    """Before 1.21 only the PA (a Revision patch would roll its pods); from 1.21 the
    Revision too (its reconciler copies the autoscaling annotations onto the PA)."""
    with pytest.raises(ClusterError, match="no PodAutoscaler labelled"):
        ct.scale_revision(api, ns, "svc", 1)
    custom = k8s.CustomObjectsApi(api)
    _revision(api, ns, "svc-00001", "svc")
    pa = {
        "apiVersion": f"{ct.PA_GROUP}/{ct.PA_VERSION}",
        "kind": "PodAutoscaler",
        "metadata": {"name": "svc-00001", "labels": {ct.SERVICE_LABEL: "svc"},
                     "annotations": {ct.MIN_SCALE: "2", ct.MAX_SCALE: "2"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "svc-00001-deployment"},
                 "protocolType": "http1"},
    }  # fmt: skip
    custom.create_namespaced_custom_object(ct.PA_GROUP, ct.PA_VERSION, ns, ct.PA_PLURAL, pa)
    assert ct.scale_revision(api, ns, "svc", 1, serving_version="1.14.2") == ["svc-00001"]
    got = custom.get_namespaced_custom_object(
        ct.PA_GROUP, ct.PA_VERSION, ns, ct.PA_PLURAL, "svc-00001"
    )
    assert got["metadata"]["annotations"][ct.MIN_SCALE] == "1"
    assert got["metadata"]["annotations"][ct.MAX_SCALE] == "1"

    def revision_annotations() -> dict:
        revision = custom.get_namespaced_custom_object(
            "serving.knative.dev", "v1", ns, "revisions", "svc-00001"
        )
        return revision["metadata"].get("annotations") or {}

    assert ct.MIN_SCALE not in revision_annotations()  # 1.14: the Revision is left alone
    assert ct.scale_revision(api, ns, "svc", 3, serving_version="1.21.1") == ["svc-00001"]
    assert revision_annotations()[ct.MIN_SCALE] == "3"
    assert revision_annotations()[ct.MAX_SCALE] == "3"


def test_roll_out_changes_the_service_template(api, knative_core, ns) -> None:
    spec = KsvcSpec(name="svc", image="dev.local/app:1")
    with Applier(api) as applier:
        applier.apply([render_ksvc(spec, ns)])
    ct.roll_out(api, ns, "svc", "stamp-1")
    got = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "serving.knative.dev", "v1", ns, "services", "svc"
    )
    template = got["spec"]["template"]
    assert template["metadata"]["annotations"][ct.ROLLOUT_ANNOTATION] == "stamp-1"
    # the rest of the template is untouched
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    assert template["spec"]["containers"][0]["image"] == "dev.local/app:1"


def test_a_liveness_probe_survives_the_service_schema(api, knative_core, ns) -> None:
    """container-restart's probe (kubelet restarts the app once it fails): Knative 1.14.2's
    Service schema keeps it, so the API server does not prune it away."""
    spec = KsvcSpec(name="svc", image="dev.local/app:1", liveness_probe=True)
    with Applier(api) as applier:
        applier.apply([render_ksvc(spec, ns)])
    got = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "serving.knative.dev", "v1", ns, "services", "svc"
    )
    container = got["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz"},
        "periodSeconds": 1,
        "failureThreshold": 1,
        "timeoutSeconds": 1,
    }
    assert (
        "livenessProbe"
        not in render_ksvc(KsvcSpec(name="svc", image="i"), ns)["spec"]["template"]["spec"][
            "containers"
        ][0]
    )


# -- the Knative config patch (Knative 1.14.2's activator Deployment, HPA and PDB) -------------
@pytest.fixture
def activator(api, knative_core, serving_src) -> Iterator[k8s.AppsV1Api]:
    deployments = serving_src / "config" / "core" / "deployments"
    docs = [
        d
        for path in (deployments / "activator.yaml", deployments / "activator-hpa.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    with Applier(api) as applier:
        applier.apply(docs)
    apps = k8s.AppsV1Api(api)
    yield apps
    with Applier(api) as applier:  # back to the manifests' values for the next test
        applier.apply(docs)


def _play_deployment_controller(apps: k8s.AppsV1Api, replicas: int) -> None:
    """Write the status the Deployment controller writes once a rollout is done."""
    dep = apps.read_namespaced_deployment("activator", "knative-serving")
    apps.patch_namespaced_deployment_status(
        "activator",
        "knative-serving",
        {"status": {"observedGeneration": dep.metadata.generation, "replicas": replicas,
                    "updatedReplicas": replicas, "availableReplicas": replicas,
                    "readyReplicas": replicas}},
    )  # fmt: skip


def test_config_patch_applies_and_restores_activator_and_configmaps(api, activator) -> None:
    apps = activator
    autoscaling = k8s.AutoscalingV2Api(api)
    core = k8s.CoreV1Api(api)
    _play_deployment_controller(apps, 1)
    before = core.read_namespaced_config_map("config-defaults", "knative-serving").data or {}
    patch = KnativeConfigPatch(
        api,
        config_maps={"config-defaults": {"max-revision-timeout-seconds": "601"}},
        activator_grace_s=60,
        activator_replicas=2,
        roll_timeout_s=2,
    )
    assert patch.changes == [
        "ConfigMap knative-serving/config-defaults max-revision-timeout-seconds=601",
        "activator terminationGracePeriodSeconds=60",
        "activator HPA minReplicas>=2",
    ]
    # Nobody rolls the activator: the wait ends, names what is missing, and undoes it all.
    with (
        pytest.raises(ClusterError, match=r">= 2 activator pods available: not ready after 2 s"),
        patch,
    ):
        pass
    assert (
        autoscaling.read_namespaced_horizontal_pod_autoscaler(
            "activator", "knative-serving"
        ).spec.min_replicas
        == 1
    )
    after = core.read_namespaced_config_map("config-defaults", "knative-serving").data or {}
    assert after.get("max-revision-timeout-seconds") == before.get("max-revision-timeout-seconds")

    # With the Deployment controller's status written as it would be, it applies.
    _play_deployment_controller(apps, 2)
    patch.roll_timeout_s = 20
    stop = threading.Event()

    def controller() -> None:
        while not stop.wait(0.3):
            _play_deployment_controller(apps, 2)

    helper = threading.Thread(target=controller)
    helper.start()
    try:
        with patch:
            dep = apps.read_namespaced_deployment("activator", "knative-serving")
            assert dep.spec.template.spec.termination_grace_period_seconds == 60
            hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(
                "activator", "knative-serving"
            )
            assert hpa.spec.min_replicas == 2
            data = core.read_namespaced_config_map("config-defaults", "knative-serving").data
            assert data["max-revision-timeout-seconds"] == "601"
    finally:
        stop.set()
        helper.join()
    dep = apps.read_namespaced_deployment("activator", "knative-serving")
    assert dep.spec.template.spec.termination_grace_period_seconds == 600  # Knative's value
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("activator", "knative-serving")
    assert hpa.spec.min_replicas == 1
    after = core.read_namespaced_config_map("config-defaults", "knative-serving").data or {}
    assert after.get("max-revision-timeout-seconds") == before.get("max-revision-timeout-seconds")


def test_single_activator_config_pins_the_hpa_and_restores_it(api, activator) -> None:
    apps = activator
    autoscaling = k8s.AutoscalingV2Api(api)
    _play_deployment_controller(apps, 1)
    patch = patch_for(api, CONFIGS["single-activator"], SCENARIOS["activator-kill"])
    assert patch.changes == ["activator HPA minReplicas=maxReplicas=1"]
    with patch:
        hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("activator", "knative-serving")
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 1)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("activator", "knative-serving")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 20)  # Knative's values


def test_existing_platform_refuses_config_changes_unless_allowed(api, activator) -> None:
    _play_deployment_controller(activator, 1)
    platform = ExistingPlatform(api, run_id="run-refuse", ingress=LOOPBACK, progress=lambda _: None)
    scenario = SCENARIOS["activator-delete-long"]
    with pytest.raises(ClusterConfigRefused) as refused:
        platform.configure(CONFIGS["default"], scenario)
    assert "activator HPA minReplicas>=2" in str(refused.value)
    assert "--allow-cluster-config" in str(refused.value)
    # Two activators already available: the default config changes nothing, so it runs.
    _play_deployment_controller(activator, 2)
    assert platform.configure(CONFIGS["default"], scenario).changes == []
    assert platform.configure(CONFIGS["default"], SCENARIOS["pod-delete-long"]).changes == []
    with pytest.raises(ClusterConfigRefused, match="terminationGracePeriodSeconds=60"):
        platform.configure(CONFIGS["activator-short-grace"], scenario)


def test_existing_platform_pulls_fixture_apps_from_the_app_registry(api) -> None:
    bare = ExistingPlatform(api, run_id="run-images", ingress=LOOPBACK, progress=lambda _: None)
    with pytest.raises(ClusterError, match="knative-drain push-apps --registry=REGISTRY"):
        bare.pod("go-exit", None, 60)
    platform = ExistingPlatform(
        api,
        run_id="run-images",
        ingress=LOOPBACK,
        app_images=images.cluster_app_refs("reg.example.com/team"),
        progress=lambda _: None,
    )
    pod = platform.pod("go-exit", None, 60, scale=2)
    assert pod.spec.image == "reg.example.com/team/knative-drain-app:go-exit"
    assert (pod.spec.min_scale, pod.spec.max_scale) == (2, 2)
    mine = platform.pod("go-exit", "reg.example.com/mine:1", 60)
    assert mine.spec.image == "reg.example.com/mine:1"  # --app-image wins


# -- the pod target's triggers ------------------------------------------------------------
def _ready_service(api, target: KnativePod, pods: list[str], errors: list) -> None:
    """Play Knative's controller and kubelet: ksvc Ready, ``pods`` Ready on a node."""
    try:

        @retry(stop=stop_after_delay(20), wait=wait_fixed(0.2), reraise=True)
        def ksvc_exists() -> None:
            assert target.namespace is not None
            k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                "serving.knative.dev", "v1", target.namespace, "services", target.spec.name
            )

        ksvc_exists()
        ns = target.namespace
        k8s.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        node = _node(api, f"node-{target.spec.name}")
        for name in pods:
            _pod(api, ns, name, node=node, labels={ct.SERVICE_LABEL: target.spec.name})
        k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "serving.knative.dev", "v1", ns, "services", target.spec.name,
            {"status": {"url": f"http://{target.spec.name}.{ns}.example.com",
                        "conditions": [{"type": "Ready", "status": "True"}]}},
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - surfaced by the test
        errors.append(exc)


def _started(api, spec: KsvcSpec, pods: list[str]) -> KnativePod:
    target = KnativePod(
        api,
        spec,
        namespaces=Namespaces(api, "run-trig"),
        ingress_url="http://127.0.0.1:31080",
        ready_timeout_s=30,
    )
    errors: list = []
    helper = threading.Thread(target=_ready_service, args=(api, target, pods, errors))
    helper.start()
    target.__enter__()
    helper.join(30)
    assert not errors
    return target


def test_scale_down_waits_for_the_pod_knative_removes(api, knative_core) -> None:
    spec = KsvcSpec(name="two", image="i", timeout_seconds=30, min_scale=2, max_scale=2)
    target = _started(api, spec, ["two-a", "two-b"])
    try:
        assert target.name == "two-a"  # found only once both are Ready
        ns = target.namespace
        custom = k8s.CustomObjectsApi(api)
        pa = {"apiVersion": f"{ct.PA_GROUP}/{ct.PA_VERSION}", "kind": "PodAutoscaler",
              "metadata": {"name": "two-00001", "labels": {ct.SERVICE_LABEL: "two"}},
              "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": "two-00001-deployment"},
                       "protocolType": "http1"}}  # fmt: skip
        custom.create_namespaced_custom_object(ct.PA_GROUP, ct.PA_VERSION, ns, ct.PA_PLURAL, pa)
        _revision(api, ns, "two-00001", "two")
        term = target.trigger(TRIGGERS["scale-down"])
        got = custom.get_namespaced_custom_object(
            ct.PA_GROUP, ct.PA_VERSION, ns, ct.PA_PLURAL, "two-00001"
        )
        assert got["metadata"]["annotations"][ct.MAX_SCALE] == "1"
        # Nothing removed a pod yet: the wait is bounded and says what it waited for.
        with pytest.raises(ClusterError, match="began terminating"):
            target.wait_gone(2)
        # The autoscaler + Deployment controller remove one pod; kubelet confirms its end.
        core = k8s.CoreV1Api(api)
        core.delete_namespaced_pod("two-b", ns, grace_period_seconds=0)
        done = target.wait_gone(10)
        assert done is term and done.gone_after_s is not None and done.killed == []
        assert done.pods == ["two-b"]
        names = [(e.pod, e.name) for e in target.events]
        assert ("two-b", "gone") in names and ("two-a", "gone") not in names
    finally:
        target.remove()


def test_activator_delete_targets_an_activator_pod(api, knative_core) -> None:
    core = k8s.CoreV1Api(api)
    node = _node(api, "node-activators")
    try:  # what the service account controller would have made
        core.create_namespaced_service_account("knative-serving", {"metadata": {"name": "default"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    made = [f"activator-{uuid.uuid4().hex[:5]}" for _ in range(2)]
    for name in made:
        _pod(api, "knative-serving", name, node=node, labels={"app": "activator"})
    spec = KsvcSpec(name="via", image="i", timeout_seconds=30, target_burst_capacity=-1)
    target = _started(api, spec, ["via-a"])
    try:
        term = target.trigger(TRIGGERS["activator-delete"])
        victim = sorted(made)[0]  # the first Ready one, by name
        assert _terminating(api, "knative-serving", victim)
        assert term.grace_s == 30.0  # the activator pod's own terminationGracePeriodSeconds
        with pytest.raises(ClusterError, match=f"knative-serving/{victim} still exists"):
            target.wait_gone(1)
        core.delete_namespaced_pod(victim, "knative-serving", grace_period_seconds=0)
        assert target.wait_gone(10).gone_after_s is not None
        # The survivor's log is asked for; with no kubelet the API server cannot serve it.
        logs = target.collect_logs()
        assert logs["activator"].startswith("(no log:"), logs
        assert any(e.pod == victim and e.name == "gone" for e in target.events)
        assert any(e.name == "activator-delete" and "2 Ready activators" in e.detail
                   for e in target.events)  # fmt: skip
    finally:
        target.remove()
        for name in made:
            with contextlib.suppress(ApiException):  # the victim is gone already
                core.delete_namespaced_pod(name, "knative-serving", grace_period_seconds=0)


def test_node_drain_trigger_uncordons_on_exit(api, knative_core) -> None:
    spec = KsvcSpec(name="drained", image="i", timeout_seconds=30)
    target = _started(api, spec, ["drained-a"])
    core = k8s.CoreV1Api(api)
    try:
        target.trigger(TRIGGERS["node-drain"])
        assert core.read_node("node-drained").spec.unschedulable is True
        assert _terminating(api, target.namespace, "drained-a")
        core.delete_namespaced_pod("drained-a", target.namespace, grace_period_seconds=0)
        assert target.wait_gone(10).gone_after_s is not None
    finally:
        target.remove()
    assert not core.read_node("node-drained").spec.unschedulable
