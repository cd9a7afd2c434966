"""kind install plan as data: config rendering, step order, commands, input errors."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from pytest_knative_drain.knative import catalog, kind_plan
from pytest_knative_drain.knative.kind_plan import KindPlanError, Step

ORDER = [
    "preflight",
    "create-cluster",
    "serving-crds",
    "serving-core",
    "serving-webhook",
    "kourier",
    "ingress-class",
    "kourier-nodeport",
    "config-domain",
    "load-images",
]


def argvs(step: Step) -> list[list[str]]:
    return [c["argv"] for c in step.detail["commands"]]


def by_name(steps: list[Step]) -> dict[str, Step]:
    return {s.name: s for s in steps}


@pytest.mark.parametrize("minor", catalog.minors("kind"))
def test_kind_config_renders_port_mapping_and_pinned_image(minor: str) -> None:
    release = catalog.resolve(minor)
    config = kind_plan.render_kind_config(release, host_port=18080, workers=0)
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert config["networking"] == {"apiServerAddress": "127.0.0.1"}
    [node] = config["nodes"]
    assert node["role"] == "control-plane"
    assert node["image"] == release.kind_node_image
    assert node["extraPortMappings"] == [
        {"containerPort": 31080, "hostPort": 18080, "listenAddress": "127.0.0.1", "protocol": "TCP"}
    ]
    assert yaml.safe_load(yaml.safe_dump(config)) == config


def test_workers_add_worker_nodes_with_the_same_image() -> None:
    release = catalog.resolve("1.14")
    config = kind_plan.render_kind_config(release, host_port=31080, workers=2)
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert {n["image"] for n in config["nodes"]} == {release.kind_node_image}
    assert all("extraPortMappings" not in n for n in config["nodes"][1:])


def test_steps_in_install_order_with_release_sources() -> None:
    release = catalog.resolve("1.14.1")
    steps = kind_plan.kind_steps(release)
    assert [s.name for s in steps] == ORDER
    named = by_name(steps)
    assert named["serving-crds"].detail["source"] == release.serving_crds_url
    assert named["serving-core"].detail["source"] == release.serving_core_url
    assert named["kourier"].detail["source"] == release.kourier_url
    assert "knative-v1.14.0/kourier.yaml" in release.kourier_url
    # CRDs: apply, then wait Established.
    crds = argvs(named["serving-crds"])
    assert crds[0][-3:] == ["apply", "-f", release.serving_crds_url]
    assert "--for=condition=Established" in crds[1]
    # Core and kourier: apply first, then waits in their namespaces, 10 minutes.
    core = argvs(named["serving-core"])
    assert core[0][-3:] == ["apply", "-f", release.serving_core_url]
    assert all("-n" in a and "knative-serving" in a and "--timeout=600s" in a for a in core[1:])
    assert core[-1][-4:] == ["pod", "-l", "!job-name", "--for=condition=Ready"]
    namespaces = [a[a.index("-n") + 1] for a in argvs(named["kourier"])[1:]]
    assert namespaces == ["kourier-system"] * 2 + ["knative-serving"] * 2


def test_create_cluster_feeds_the_rendered_config() -> None:
    release = catalog.resolve("1.23")
    steps = kind_plan.kind_steps(release, cluster_name="drain-x", host_port=8081, workers=1)
    create = by_name(steps)["create-cluster"]
    [command] = create.detail["commands"]
    assert command["argv"][:5] == ["kind", "create", "cluster", "--name", "drain-x"]
    assert "--config=-" in command["argv"]
    expected = kind_plan.render_kind_config(release, host_port=8081, workers=1)
    assert yaml.safe_load(command["stdin"]) == expected == create.detail["kind_config"]


def test_every_kubectl_call_names_the_kind_context() -> None:
    steps = kind_plan.kind_steps(catalog.resolve("1.14"), cluster_name="abc")
    kubectl = [a for s in steps for a in argvs(s) if a[0] == "kubectl" and "--client" not in a]
    assert len(kubectl) >= 10
    assert all(a[1:3] == ["--context", "kind-abc"] for a in kubectl)


def test_configmap_patches_and_nodeport_service() -> None:
    named = by_name(kind_plan.kind_steps(catalog.resolve("1.14")))
    [ingress] = argvs(named["ingress-class"])
    assert ingress[ingress.index("configmap") + 1] == "config-network"
    assert json.loads(ingress[-1]) == {
        "data": {"ingress-class": "kourier.ingress.networking.knative.dev"}
    }
    [domain] = argvs(named["config-domain"])
    assert domain[domain.index("configmap") + 1] == "config-domain"
    assert json.loads(domain[-1]) == {"data": {"127.0.0.1.sslip.io": ""}}
    [svc_cmd] = named["kourier-nodeport"].detail["commands"]
    service = yaml.safe_load(svc_cmd["stdin"])
    assert service["metadata"] == {
        "name": "kourier-ingress",
        "namespace": "kourier-system",
        "labels": {"networking.knative.dev/ingress-provider": "kourier"},
    }
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["selector"] == {"app": "3scale-kourier-gateway"}
    assert service["spec"]["ports"] == [
        {"name": "http2", "nodePort": 31080, "port": 80, "targetPort": 8080}
    ]


def test_manifests_dir_replaces_urls(tmp_path: Path) -> None:
    for name in kind_plan.MANIFESTS:
        (tmp_path / name).write_text("# placeholder\n")
    steps = kind_plan.kind_steps(catalog.resolve("1.14"), manifests_dir=tmp_path)
    named = by_name(steps)
    for step, name in (
        ("serving-crds", "serving-crds.yaml"),
        ("serving-core", "serving-core.yaml"),
        ("kourier", "kourier.yaml"),
    ):
        assert named[step].detail["source"] == str(tmp_path / name)
        assert argvs(named[step])[0][-1] == str(tmp_path / name)
    assert not any("https://" in " ".join(a) for s in steps for a in argvs(s))


def test_manifests_dir_errors_name_missing_files(tmp_path: Path) -> None:
    (tmp_path / "serving-crds.yaml").write_text("")
    release = catalog.resolve("1.14")
    with pytest.raises(KindPlanError, match="missing serving-core.yaml, kourier.yaml"):
        kind_plan.kind_steps(release, manifests_dir=tmp_path)
    with pytest.raises(KindPlanError, match="manifests_dir=.*not a directory"):
        kind_plan.kind_steps(release, manifests_dir=tmp_path / "nope")


def test_app_images_load_only_from_skip_resolution_registries() -> None:
    release = catalog.resolve("1.14")
    steps = kind_plan.kind_steps(release, app_images=["dev.local/app:1", "kind.local/b:2"])
    assert argvs(by_name(steps)["load-images"]) == [
        ["kind", "load", "docker-image", "dev.local/app:1", "--name", "knative-drain"],
        ["kind", "load", "docker-image", "kind.local/b:2", "--name", "knative-drain"],
    ]
    assert argvs(by_name(kind_plan.kind_steps(release))["load-images"]) == []
    for bad in ("app:1", "docker.io/library/app:1", "localhost:5001/app:1"):
        with pytest.raises(KindPlanError, match="kind.local, ko.local, dev.local"):
            kind_plan.kind_steps(release, app_images=[bad])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"host_port": 0}, "host_port=0: accepted values are whole numbers 1-65535"),
        ({"host_port": 65536}, "host_port=65536"),
        ({"host_port": True}, "host_port=True"),
        ({"host_port": "8080"}, "host_port='8080'"),
        ({"workers": -1}, "workers=-1: accepted values are 0-4"),
        ({"workers": 5}, "workers=5"),
        ({"cluster_name": "Knative_Drain"}, "cluster_name='Knative_Drain': kind accepts"),
        ({"cluster_name": ""}, "cluster_name=''"),
    ],
)
def test_bad_input_names_option_and_accepted_values(kwargs: dict, fragment: str) -> None:
    with pytest.raises(KindPlanError) as info:
        kind_plan.kind_steps(catalog.resolve("1.14"), **kwargs)
    assert fragment in str(info.value)
    assert issubclass(KindPlanError, ValueError)


def test_preflight_names_min_kind_and_commands_are_bounded() -> None:
    release = catalog.resolve("1.23")
    steps = kind_plan.kind_steps(release)
    preflight = by_name(steps)["preflight"]
    assert preflight.detail["min_kind_version"] == release.min_kind_version == "0.30.0"
    assert [a[:2] for a in argvs(preflight)] == [
        ["docker", "info"],
        ["kind", "version"],
        ["kubectl", "version"],
    ]
    commands = [c for s in steps for c in s.detail["commands"]]
    assert all(0 < c["timeout_s"] <= 900 and 1 <= c["retries"] <= 12 for c in commands)


def test_format_plan_lists_release_and_steps_in_order() -> None:
    release = catalog.resolve("1.14")
    steps = kind_plan.kind_steps(release, host_port=18080, app_images=["dev.local/app:1"])
    text = kind_plan.format_plan(release, steps)
    assert text.startswith("Knative Serving 1.14.2 (knative-v1.14.2, knative.dev/serving v0.41.2")
    positions = [text.index(f"{i:2d}. {name}:") for i, name in enumerate(ORDER, 1)]
    assert positions == sorted(positions)
    assert "NodePort 31080 -> 127.0.0.1:18080" in text
    assert "hostPort: 18080" in text  # the kind config itself is shown
    assert "$ kind load docker-image dev.local/app:1 --name knative-drain" in text
    assert release.kind_node_image in text


def test_steps_are_frozen_and_json_ready() -> None:
    steps = kind_plan.kind_steps(catalog.resolve("1.10"))
    doc = json.loads(json.dumps([s.to_dict() for s in steps]))
    assert [d["name"] for d in doc] == ORDER
    with pytest.raises(dataclasses.FrozenInstanceError):
        steps[0].name = "x"  # type: ignore[misc]
