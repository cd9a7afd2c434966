"""The cluster-stack builders on real inputs: the Go module proxy, real module sources,
real Docker. The full builds (Kubernetes, node image) take an hour cold and run in the
kind-e2e job; here each builder's own logic runs on the real files it consumes."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
import yaml

from pytest_knative_drain.builders import gomod, knative, kourier, kubernetes, node_image
from pytest_knative_drain.builders.rootfs import ImagesError
from pytest_knative_drain.host import runc_bounded_caps
from pytest_knative_drain.platforms.kind_cluster import cni_config

STATUS = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"


def test_bounding_set_and_missing_capabilities() -> None:
    have = runc_bounded_caps.bounding_set(STATUS)
    assert "CAP_SYS_ADMIN" in have and "CAP_SYS_RESOURCE" not in have
    assert runc_bounded_caps.missing_capabilities(STATUS) == ["CAP_SYS_RESOURCE"]
    full = STATUS.replace("000001fffeffffff", "000001ffffffffff")
    assert runc_bounded_caps.missing_capabilities(full) == []
    # a kernel that knows capabilities up to AUDIT_READ (37): Docker asks for no more, so a
    # bounding set ending there is full, and the shim is not needed
    old_kernel = STATUS.replace("000001fffeffffff", "0000003fffffffff")
    assert runc_bounded_caps.missing_capabilities(old_kernel, last=37) == []
    assert runc_bounded_caps.missing_capabilities(old_kernel, last=40) == [
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]  # fmt: skip


def test_shim_filters_create_and_exec_specs(tmp_path) -> None:
    allowed = frozenset({"CAP_CHOWN", "CAP_SYS_ADMIN"})
    caps = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"]
    spec = {
        "process": {"capabilities": {k: list(caps) for k in ("bounding", "effective")}},
        "root": {"path": "rootfs"},
    }
    (tmp_path / "config.json").write_text(json.dumps(spec))
    argv = ["--root", "/run/x", "--log", "l.json", "create", "--bundle", str(tmp_path), "id"]
    runc_bounded_caps.rewrite_for(argv, allowed, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert written["root"] == {"path": "rootfs"}  # the rest of the spec untouched
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "capabilities": {"permitted": caps}}))
    runc_bounded_caps.rewrite_for(["exec", "--process", str(process), "id"], allowed, tmp_path)
    assert json.loads(process.read_text())["capabilities"]["permitted"] == [
        "CAP_CHOWN",
        "CAP_SYS_ADMIN",
    ]
    untouched = json.dumps(spec)
    (tmp_path / "config.json").write_text(untouched)
    runc_bounded_caps.rewrite_for(["state", "id"], allowed, tmp_path)  # other commands: as is
    assert (tmp_path / "config.json").read_text() == untouched


def test_privileged_container_starts_on_this_host() -> None:
    """The host fix for real: kind's nodes are privileged containers."""
    from pytest_knative_drain.builders.images import BASE_IMAGE
    from pytest_knative_drain.host.docker_engine import engine_answers
    from pytest_knative_drain.host.privileged_runtime import ensure_privileged_runtime

    if not engine_answers():
        pytest.skip("no Docker engine")
    account = ensure_privileged_runtime(progress=lambda _m: None)
    missing = runc_bounded_caps.missing_capabilities()
    if missing:  # applied only where needed, and said so
        assert account is not None and all(cap in account for cap in missing)
    else:
        assert account is None
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--privileged",
            BASE_IMAGE,
            "sh",
            "-c",
            "grep CapEff /proc/self/status",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("CapEff:")


def test_module_proxy_answers_for_a_served_version() -> None:
    assert gomod.resolvable("sigs.k8s.io/kind", "v0.24.0")
    assert not gomod.resolvable("sigs.k8s.io/kind", "v0.0.999")
    assert gomod._escape("github.com/BurntSushi/toml") == "github.com/!burnt!sushi/toml"


def test_kubeadm_versions_read_from_the_module_source() -> None:
    info = gomod.download("k8s.io/kubernetes", "v1.31.14")
    from pathlib import Path

    versions = kubernetes.kubeadm_versions("v1.31.14", Path(info["Dir"]))
    assert versions.images() == {
        "kube-apiserver": "registry.k8s.io/kube-apiserver:v1.31.14",
        "kube-controller-manager": "registry.k8s.io/kube-controller-manager:v1.31.14",
        "kube-scheduler": "registry.k8s.io/kube-scheduler:v1.31.14",
        "kube-proxy": "registry.k8s.io/kube-proxy:v1.31.14",
        "etcd": "registry.k8s.io/etcd:3.5.24-0",
        "coredns": "registry.k8s.io/coredns/coredns:v1.11.3",
        "pause": "registry.k8s.io/pause:3.10",
    }
    assert versions.etcd_release == "v3.5.24"
    staging = kubernetes.staging_modules(Path(info["GoMod"]).read_text())
    assert "k8s.io/api" in staging and "k8s.io/kube-proxy" in staging
    flags = kubernetes.version_ldflags("v1.31.14")
    assert "-X k8s.io/component-base/version.gitVersion=v1.31.14" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=31" in flags
    with pytest.raises(ImagesError, match="expected v1.MINOR.PATCH"):
        kubernetes.check_version("1.31")


def test_serving_commands_are_the_ones_a_release_names() -> None:
    """1.10's config/core names the domain-mapping controller and webhook besides the five
    commands every release has: a fixed list left its serving-core unresolvable."""
    from pathlib import Path

    def named(version: str) -> tuple[str, ...]:
        info = gomod.download(knative.SERVING, knative.module_version(version))
        go_mod = Path(info["GoMod"]).read_text()
        files = knative.config_files(Path(info["Dir"]), "config/core", knative.LINKED_FILES, go_mod)
        return knative.commands_named(text for _rel, text in files)

    assert named("1.14.2") == knative.COMMANDS
    assert named("1.10.4") == (*knative.COMMANDS, "domain-mapping", "domain-mapping-webhook")
    with pytest.raises(ImagesError, match="ko://knative.dev/net-kourier"):
        knative.commands_named(["image: ko://knative.dev/net-kourier/cmd/kourier"])


def test_serving_manifests_resolved_like_a_release() -> None:
    """config/core of the real module, with the files its zip lost as symlinks put back."""
    from pathlib import Path

    assert knative.module_version("1.14.2") == "v0.41.2"
    info = gomod.download(knative.SERVING, "v0.41.2")
    go_mod = Path(info["GoMod"]).read_text()
    files = knative.config_files(Path(info["Dir"]), "config/core", knative.LINKED_FILES, go_mod)
    refs = {f"{knative.SERVING}/cmd/{c}": knative.image_ref(c, "1.14.2") for c in knative.COMMANDS}
    docs = [d for _rel, text in files for d in knative.resolve(text, refs, "1.14.2")]
    assert docs[0]["kind"] == "Namespace"  # ko's lexical walk: 100-namespace.yaml first
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {
        "ingresses.networking.internal.knative.dev",
        "images.caching.internal.knative.dev",
        "serverlessservices.networking.internal.knative.dev",
        "clusterdomainclaims.networking.internal.knative.dev",
        "services.serving.knative.dev",
    } <= crds
    text = yaml.safe_dump_all(docs)
    assert "ko://" not in text and "version: devel" not in text
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "activator"
    )
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "dev.local/knative-drain/serving/activator:1.14.2"
    )
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "config-deployment"
    )
    assert config["data"]["queue-sidecar-image"] == knative.image_ref("queue", "1.14.2")
    assert any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == "config-network" for d in docs)
    with pytest.raises(ImagesError, match="no image built for ko://"):
        knative.resolve("image: ko://knative.dev/serving/cmd/other", refs, "1.14.2")


def test_kourier_manifest_points_at_the_built_images() -> None:
    docs = [
        {
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "kourier-gateway",
                                "image": "docker.io/envoyproxy/envoy:v1.36-latest",
                            }
                        ]
                    }
                }
            },
        },
        {
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "controller",
                                "image": "dev.local/knative-drain/kourier/controller:1.21.0",
                                "env": [{"name": "SYSTEM_NAMESPACE", "value": "x"}],
                            }
                        ]
                    }
                }
            },
        },
    ]
    kourier.patch_manifest(docs, "dev.local/knative-drain/kourier/gateway:1.36.4", "v1.31.14")
    gateway = docs[0]["spec"]["template"]["spec"]["containers"][0]
    controller = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"] == "dev.local/knative-drain/kourier/gateway:1.36.4"
    assert {"name": "KUBERNETES_MIN_VERSION", "value": "v1.31.14"} in controller["env"]
    assert kourier.nearest_kourier("1.14.2") == "1.21.0"


def test_kind_base_files_and_containerd_names() -> None:
    files = node_image.kind_base_files("v0.24.0")
    assert (files / "usr/local/bin/entrypoint").is_file()
    assert "restrict_oom_score_adj" in (files / "etc/containerd/config.toml").read_text()
    assert node_image._containerd_name("registry.k8s.io/pause:3.10") == "registry.k8s.io/pause:3.10"
    assert node_image._containerd_name("knative-drain/base:x") == "docker.io/knative-drain/base:x"
    assert node_image._containerd_name("busybox:1") == "docker.io/library/busybox:1"


def test_cni_config_is_ptp_for_the_node_cidr() -> None:
    config = json.loads(cni_config("10.244.1.0/24"))
    ptp, portmap = config["plugins"]
    assert ptp["type"] == "ptp" and portmap["type"] == "portmap"
    assert ptp["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]


def test_the_pause_image_is_preloaded_under_the_sandbox_image_kinds_containerd_pins() -> None:
    """kind v0.30's config pins pause:3.10 where kubeadm 1.34 asks for 3.10.1: as kind's own
    node build, the pause image goes in under containerd's name (else no pod sandbox starts)."""
    for kind_version in ("v0.24.0", "v0.30.0"):
        config = node_image.kind_base_files(kind_version) / "etc/containerd/config.toml"
        assert node_image.sandbox_image(config.read_text()) == "registry.k8s.io/pause:3.10"
    assert node_image.sandbox_image('[plugins]\n  foo = "bar"\n') is None
    same = {"pause": "registry.k8s.io/pause:3.10", "etcd": "registry.k8s.io/etcd:3.5.24-0"}
    files = node_image.kind_base_files("v0.30.0")
    assert node_image.with_sandbox_pause(None, same, files) == same  # type: ignore[arg-type]


def test_the_pause_image_is_retagged_for_the_sandbox_in_docker(tmp_path) -> None:
    import io
    import tarfile

    import docker

    client = docker.from_env(timeout=60)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    client.api.import_image_from_data(
        buf.getvalue(), repository="knative-drain-test/pause", tag="kubeadm"
    )
    (tmp_path / "etc/containerd").mkdir(parents=True)
    pinned = "knative-drain-test/pause:sandbox"
    (tmp_path / "etc/containerd/config.toml").write_text(f'  sandbox_image = "{pinned}"\n')
    try:
        images = {"pause": "knative-drain-test/pause:kubeadm", "etcd": "e"}
        out = node_image.with_sandbox_pause(client, images, tmp_path)
        assert out == {"pause": pinned, "etcd": "e"}
        assert client.images.get(pinned).id == client.images.get(images["pause"]).id
    finally:
        for ref in (pinned, "knative-drain-test/pause:kubeadm"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(ref)
        client.close()
