"""--platform=existing against a real kube-apiserver: fail fast, detect versions, refuse
cluster-wide ConfigMap changes unless allowed, clean up its namespaces."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import kube_apiserver
import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from pytest_knative_drain.evidence.report import DrainReport
from pytest_knative_drain.knative import catalog
from pytest_knative_drain.matrix.configs import KnativeConfig
from pytest_knative_drain.matrix.scenarios import SCENARIOS
from pytest_knative_drain.options import DrainOptions
from pytest_knative_drain.platforms.cluster import api as cluster
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.cluster.apply import Applier
from pytest_knative_drain.platforms.existing import ClusterConfigRefused, ExistingPlatform

# A config that changes a ConfigMap of its own, so other tests' ConfigMaps stay untouched.
CONFIG_900 = KnativeConfig(
    "timeout-900",
    "revision-timeout-seconds 900",
    config_maps={"config-defaults-existing": {"revision-timeout-seconds": "900"}},
)


@pytest.fixture(scope="module")
def kube(pytestconfig: pytest.Config) -> kube_apiserver.KubeApiServer:
    return kube_apiserver.session_server(pytestconfig)


@pytest.fixture
def knative_ns(kube) -> Iterator[k8s.CoreV1Api]:
    """A knative-serving namespace labelled as release 1.14.2 labels it, plus config-defaults."""
    api = cluster.api_client(kube.kubeconfig, kube.context)
    core = k8s.CoreV1Api(api)
    with Applier(api) as applier:
        applier.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": "knative-serving",
                        "labels": {"app.kubernetes.io/version": "1.14.2"},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "config-defaults-existing",
                        "namespace": "knative-serving",
                    },
                },
            ]
        )
    yield core
    # Back to what the source manifest says, so other modules see Knative's own label.
    core.patch_namespace(
        "knative-serving", {"metadata": {"labels": {"app.kubernetes.io/version": "devel"}}}
    )
    api.close()


def _connect(kube, **kwargs) -> ExistingPlatform:
    kwargs.setdefault("ingress_port", 18080)  # no gateway Service here to read it from
    return ExistingPlatform.connect(
        kube.kubeconfig, kube.context, run_id="run-existing", progress=lambda _: None, **kwargs
    )


def test_detects_versions_and_refuses_cluster_config(kube, knative_ns) -> None:
    notes: list[str] = []
    platform = ExistingPlatform.connect(
        kube.kubeconfig,
        kube.context,
        run_id="run-existing",
        requested_version="1.16",
        ingress_port=18080,
        progress=notes.append,
    )
    facts = platform.describe()
    assert facts["platform"] == "existing"
    assert facts["kubernetes_version"] == kube_apiserver.VERSION
    assert facts["knative_version"] == "1.14.2"
    assert facts["requested_knative_version"] == "1.16"
    assert "app.kubernetes.io/version" in facts["knative_version_source"]
    assert any("not the requested --knative-version=1.16" in n for n in notes)
    with pytest.raises(ClusterConfigRefused, match="--allow-cluster-config") as err:
        platform.configure(CONFIG_900, SCENARIOS["pod-delete-long"])
    assert "knative-serving/config-defaults-existing" in str(err.value)
    assert (
        knative_ns.read_namespaced_config_map("config-defaults-existing", "knative-serving").data
        is None
    )
    ns = platform.namespaces.create("ex")
    platform.close()
    assert knative_ns.read_namespace(ns).metadata.deletion_timestamp is not None


def test_allowed_cluster_config_is_restored(kube, knative_ns) -> None:
    platform = _connect(kube, allow_cluster_config=True)
    with platform.configure(CONFIG_900, SCENARIOS["pod-delete-long"]):
        data = knative_ns.read_namespaced_config_map(
            "config-defaults-existing", "knative-serving"
        ).data
        assert data == {"revision-timeout-seconds": "900"}
    assert (
        knative_ns.read_namespaced_config_map("config-defaults-existing", "knative-serving").data
        is None
    )
    platform.close()


def test_fails_fast_without_knative(kube, knative_ns) -> None:
    knative_ns.patch_namespace(
        "knative-serving", {"metadata": {"labels": {"app.kubernetes.io/version": "devel"}}}
    )
    with pytest.raises(ClusterError, match="Knative Serving not found .* install Knative Serving"):
        _connect(kube)


def test_fails_fast_on_unreachable_cluster_or_bad_kubeconfig(kube, tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    config = tmp_path / "kubeconfig"
    config.write_text(kube.kubeconfig.read_text().replace(kube.url, f"https://127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"cannot reach the cluster at https://127.0.0.1"):
        ExistingPlatform.connect(config, None, run_id="r", progress=lambda _: None, timeout_s=2)
    assert time.monotonic() - started < 10
    with pytest.raises(ClusterError, match=r"cannot load --kubeconfig=.*missing --context=nope"):
        ExistingPlatform.connect(tmp_path / "missing", "nope", run_id="r")


def test_pod_needs_a_pullable_image_and_targets_the_ingress(kube, knative_ns) -> None:
    platform = _connect(kube, ingress_port=18080)
    with pytest.raises(ClusterError, match=r"--app-image=REGISTRY/NAME:TAG") as err:
        platform.pod("python-gunicorn-exec", None, 30)
    assert "in no registry your cluster can pull from" in str(err.value)
    target = platform.pod("custom", "registry.example/app:1", 45)
    assert target.spec.name == "drain-custom"
    assert target.spec.image == "registry.example/app:1"
    assert target.spec.timeout_seconds == 45
    assert target.url == "http://127.0.0.1:18080"
    assert target.namespace is None  # nothing is created before the test enters it
    assert "127.0.0.1:18080" in platform.describe()["ingress"]
    platform.close()


def _report(platform: ExistingPlatform, requested: str | None = None) -> DrainReport:
    """The run record as the plugin builds it: options as resolved, then describe()."""
    options = DrainOptions(
        release=catalog.resolve(requested or "1.14"),  # what options.py resolves
        platform="existing",
        profile="quick",
        kubeconfig=None,
        context=None,
        keep=False,
        app_image=None,
        drain_report=None,
        knative_version_requested=requested,
    )
    report = DrainReport(options)
    report.environment.update(platform.describe())
    return report


def test_report_names_the_clusters_version_not_the_default(kube, knative_ns) -> None:
    knative_ns.patch_namespace(
        "knative-serving", {"metadata": {"labels": {"app.kubernetes.io/version": "1.16.3"}}}
    )
    notes: list[str] = []
    platform = ExistingPlatform.connect(
        kube.kubeconfig,
        kube.context,
        run_id="run-existing",
        ingress_port=18080,
        progress=notes.append,
    )
    assert platform.describe()["knative_version"] == "1.16.3"
    assert "requested_knative_version" not in platform.describe()  # nobody asked
    assert not any("warning" in n for n in notes)
    data = _report(platform).to_dict()
    assert data["knative"]["version"] == "1.16.3" and data["knative"]["tag"] == "knative-v1.16.3"
    assert "requested_version" not in data["knative"]
    assert _report(platform).facts()["knative_version"] == "1.16.3"
    assert "| Knative Serving | 1.16.3 (knative-v1.16.3) |" in _report(platform).to_markdown()
    platform.close()


def test_report_names_an_explicit_request_that_differs(kube, knative_ns) -> None:
    knative_ns.patch_namespace(
        "knative-serving", {"metadata": {"labels": {"app.kubernetes.io/version": "1.16.3"}}}
    )
    asked = _connect(kube, requested_version="1.14")
    report = _report(asked, requested="1.14")
    data = report.to_dict()
    assert data["knative"]["version"] == "1.16.3"
    assert data["knative"]["requested_version"] == "1.14"
    assert data["environment"]["requested_knative_version"] == "1.14"
    assert "| requested Knative version | 1.14 |" in report.to_markdown()
    # a minor that the cluster's patch belongs to is not a mismatch
    same = _connect(kube, requested_version="1.16")
    assert "requested_knative_version" not in same.describe()
    asked.close()
    same.close()


def test_version_from_the_controller_deployment_label(kube, knative_ns) -> None:
    """No version on the namespace: the controller Deployment's label names it."""
    api = cluster.api_client(kube.kubeconfig, kube.context)
    apps = k8s.AppsV1Api(api)
    existed = True
    try:
        saved = apps.read_namespaced_deployment("controller", "knative-serving").metadata.labels
    except ApiException as exc:
        assert exc.status == 404
        existed, saved = False, None
        apps.create_namespaced_deployment(
            "knative-serving",
            {
                "metadata": {"name": "controller"},
                "spec": {
                    "selector": {"matchLabels": {"app": "controller"}},
                    "template": {
                        "metadata": {"labels": {"app": "controller"}},
                        "spec": {"containers": [{"name": "controller", "image": "ko://x"}]},
                    },
                },
            },
        )
    try:
        knative_ns.patch_namespace(
            "knative-serving", {"metadata": {"labels": {"app.kubernetes.io/version": "devel"}}}
        )
        apps.patch_namespaced_deployment(
            "controller",
            "knative-serving",
            {"metadata": {"labels": {"app.kubernetes.io/version": "v1.17.1"}}},
        )
        platform = _connect(kube)
        facts = platform.describe()
        assert facts["knative_version"] == "1.17.1"
        assert "deployment knative-serving/controller" in facts["knative_version_source"]
        assert _report(platform).to_dict()["knative"]["version"] == "1.17.1"
        platform.close()
    finally:
        if existed:
            old = (saved or {}).get("app.kubernetes.io/version")  # None removes the key
            apps.patch_namespaced_deployment(
                "controller",
                "knative-serving",
                {"metadata": {"labels": {"app.kubernetes.io/version": old}}},
            )
        else:
            apps.delete_namespaced_deployment("controller", "knative-serving")
        api.close()
