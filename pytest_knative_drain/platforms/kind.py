"""``--platform=kind``: a kind cluster with Knative Serving + Kourier for one catalog release.

kind supports a node image only with the kind release that built it, so the kind binary
(from PATH or ``kind_path``) must be at least ``release.min_kind_version``; pytest-kind's
own default (v0.17) makes Kubernetes 1.25, below what Knative 1.14+ accepts. The cluster
is made with pytest-kind's ``KindCluster`` (given that kind binary and our rendered kind
config), then the steps of ``kind_plan.kind_steps`` run through the kubernetes client:
the plan a user reviews with ``knative-drain plan`` is what runs here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from .. import kind_plan
from ..catalog import Release
from ..docker_engine import state_dir
from .cluster import (
    Applier,
    ClusterError,
    ConfigMapPatch,
    Progress,
    api_client,
    knative_serving_version,
    kubernetes_version,
    wait_deployments_available,
    wait_pods_ready,
)
from .serving_platform import ServingPlatform

_KIND_VERSION = re.compile(r"kind v(\d+)\.(\d+)\.(\d+)")


def _tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def find_kind(release: Release, kind_path: str | Path | None = None) -> tuple[Path, str]:
    """(path, version) of a kind binary new enough for ``release``'s node image, or ClusterError."""
    path = Path(kind_path) if kind_path else (Path(p) if (p := shutil.which("kind")) else None)
    need = release.min_kind_version
    if path is None or not path.is_file():
        where = "not found on PATH" if path is None else f"{path} does not exist"
        raise ClusterError(
            f"--platform=kind needs the kind binary >= {need} (Knative {release.version} runs on "
            f"{release.kind_node_image.split('@')[0]}): {where}; "
            "install it (https://kind.sigs.k8s.io/docs/user/quick-start/) or use --platform=local"
        )
    try:
        out = subprocess.run(
            [str(path), "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError as exc:
        raise ClusterError(f"--platform=kind: cannot run {path}: {exc}") from None
    match = _KIND_VERSION.search(out)
    if not match:
        raise ClusterError(f"--platform=kind: {path} version output not understood: {out!r:.200}")
    have = ".".join(match.groups())
    if _tuple(have) < _tuple(need):
        raise ClusterError(
            f"--platform=kind: kind {have} at {path} is too old for Knative {release.version}'s "
            f"node image {release.kind_node_image.split('@')[0]} (built by kind {need}); "
            f"install kind >= {need}"
        )
    return path, have


def check_docker() -> str:
    """The Docker server version, or ClusterError saying kind needs a running Docker."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        try:
            return str(client.version().get("Version", "unknown"))
        finally:
            client.close()
    except (docker.errors.DockerException, OSError) as exc:
        raise ClusterError(
            f"--platform=kind needs a running Docker engine (kind nodes are containers): {exc}"
        ) from None


def _print(message: str) -> None:
    print(f"[knative-drain] {message}")


def fixture_image_name(app: str) -> str:
    """The name a fixture app image gets in the cluster: under ``dev.local``, so Knative
    does not try to resolve its tag in a registry (kind_plan.LOCAL_REGISTRIES)."""
    return f"dev.local/knative-drain-app:{app}"


def cluster_exists(kind: Path, name: str) -> bool:
    """Whether ``kind get clusters`` lists ``name``."""
    proc = subprocess.run(
        [str(kind), "get", "clusters"], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise ClusterError(f"`{kind} get clusters` failed: {proc.stderr.strip()[-400:]}")
    return name in proc.stdout.split()


class KindPlatform(ServingPlatform):
    """A kind cluster running Knative Serving; deleted at the end unless kept."""

    def __init__(
        self,
        cluster: Any,
        api: Any,
        *,
        release: Release,
        run_id: str,
        host_port: int,
        created: bool,
        keep: bool = False,
        app_images: dict[str, str] | None = None,
        progress: Progress = _print,
        facts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            api,
            run_id=run_id,
            ingress_port=host_port,  # Kourier's NodePort is mapped here
            app_images=app_images,
            progress=progress,
            keep=keep,
            facts=facts,
        )
        self.cluster = cluster
        self.release = release
        self.created = created

    @classmethod
    def create(
        cls,
        release: Release,
        *,
        run_id: str,
        app_image: str | None = None,
        apps: list[str] | None = None,
        manifests_dir: Path | None = None,
        cluster_name: str = "knative-drain",
        host_port: int = kind_plan.NODE_PORT,
        workers: int = 0,
        keep: bool = False,
        kind_path: str | Path | None = None,
        progress: Progress = _print,
    ) -> KindPlatform:
        """Preflight (kind, Docker, images, manifests), cluster, Knative install, image load.

        Fails fast, before any cluster exists, on a missing/old kind, no Docker, a bad image
        name or a missing manifest. A cluster it created is deleted again if a later step
        fails (unless ``keep``); an existing cluster is reused only with ``keep``.
        """
        kind, kind_version = find_kind(release, kind_path)
        docker_version = check_docker()
        images = (app_image,) if app_image else ()
        try:
            kind_plan.kind_steps(
                release, cluster_name=cluster_name, host_port=host_port, workers=workers,
                app_images=images,
            )  # fmt: skip
        except kind_plan.KindPlanError as exc:
            raise ClusterError(f"--platform=kind: {exc}") from None
        sources = _manifests(release, manifests_dir)
        app_images = {"custom": app_image} if app_image else _fixture_images(apps, progress)
        from pytest_kind import KindCluster

        # A stable kubeconfig per cluster name, so a kept cluster can be found and reused.
        home = state_dir() / "kind" / cluster_name
        home.mkdir(parents=True, exist_ok=True)
        kubeconfig = home / "kubeconfig"
        cluster = KindCluster(cluster_name, kubeconfig=kubeconfig, kind_path=kind)
        reuse = cluster_exists(kind, cluster_name)
        if reuse and not keep:
            raise ClusterError(
                f"--platform=kind: a kind cluster named {cluster_name!r} already exists; pass "
                f"--keep-cluster to reuse it, or delete it (kind delete cluster --name "
                f"{cluster_name})"
            )
        created = not reuse
        if reuse:  # kind writes a kubeconfig only on create: export the kept cluster's
            _kind(kind, ["export", "kubeconfig", "--name", cluster_name,
                         "--kubeconfig", str(kubeconfig)])  # fmt: skip
        config = home / "kind-config.yaml"
        config.write_text(
            yaml.safe_dump(
                kind_plan.render_kind_config(release, host_port=host_port, workers=workers),
                sort_keys=False,
            )
        )
        progress(
            f"{'reusing' if reuse else 'creating'} kind cluster {cluster_name!r} "
            f"(kind {kind_version}, {release.kind_node_image.split('@')[0]})"
        )
        try:
            try:
                cluster.create(config_file=config)
            except Exception as exc:  # noqa: BLE001 - kind exit codes, pykube config errors
                raise ClusterError(f"--platform=kind: kind create cluster failed: {exc}") from None
            api = api_client(kubeconfig, f"kind-{cluster_name}")
            try:
                k8s.VersionApi(api).get_code(_request_timeout=15)
            except (ApiException, Urllib3Error, OSError) as exc:
                raise ClusterError(
                    f"--platform=kind: the API server of kind cluster {cluster_name!r} "
                    f"({api.configuration.host}) does not answer: {exc}"
                ) from None
            platform = cls(
                cluster, api, release=release, run_id=run_id, host_port=host_port,
                created=created, keep=keep, app_images=app_images, progress=progress,
                facts={"kind_version": kind_version, "docker_version": docker_version,
                       "cluster_name": cluster_name, "reused_cluster": reuse},
            )  # fmt: skip
            platform.install(sources)
            platform.load_images(sorted(set(app_images.values())))
            platform.facts["kubernetes_version"] = kubernetes_version(api)
        except BaseException:
            if created and not keep:
                _delete_cluster(cluster, progress)
            raise
        if keep:
            progress(f"cluster kept: --kubeconfig {kubeconfig} --context kind-{cluster_name}")
        return platform

    def install(self, sources: dict[str, Path], *, timeout_s: float = 600.0) -> None:
        """kind_plan's install steps with the kubernetes client (skipped if already there)."""
        from .. import manifests

        have, _ = knative_serving_version(self.api)
        if have == self.release.version:
            self.progress(f"Knative Serving {have} already installed: skipping the install")
            return
        with Applier(self.api, progress=self.progress) as applier:
            self.progress("serving-crds: apply, wait Established")
            applier.apply(manifests.documents(sources["serving-crds"]))
            self.progress("serving-core: apply, wait knative-serving Ready")
            applier.apply(manifests.documents(sources["serving-core"]))
            self._wait_ready("knative-serving", timeout_s)
            self.progress("kourier: apply, wait kourier-system Ready")
            applier.apply(manifests.documents(sources["kourier"]))
            self._wait_ready("kourier-system", timeout_s)
            self._wait_ready("knative-serving", timeout_s)
            ConfigMapPatch(
                self.api, "config-network", {"ingress-class": kind_plan.KOURIER_INGRESS_CLASS},
                progress=self.progress,
            ).apply()  # fmt: skip
            applier.apply([kind_plan.kourier_nodeport_service()])
            ConfigMapPatch(
                self.api, "config-domain", {kind_plan.DOMAIN: ""}, progress=self.progress
            ).apply()

    def _wait_ready(self, namespace: str, timeout_s: float) -> None:
        wait_deployments_available(self.api, namespace, timeout_s=timeout_s, progress=self.progress)
        wait_pods_ready(self.api, namespace, timeout_s=timeout_s, progress=self.progress)

    def load_images(self, images: list[str]) -> None:
        """``kind load docker-image`` each image (the cluster pulls from no registry here)."""
        for image in images:
            self.progress(f"kind load docker-image {image}")
            try:
                self.cluster.load_docker_image(image)
            except (subprocess.CalledProcessError, OSError) as exc:
                raise ClusterError(
                    f"--platform=kind: kind load docker-image {image}: {exc}"
                ) from None

    def describe(self) -> dict[str, Any]:
        """Facts for the report's environment section."""
        return {
            "platform": "kind",
            "knative_version": self.release.version,
            "node_image": self.release.kind_node_image,
            "ingress": f"Kourier NodePort {kind_plan.NODE_PORT} -> 127.0.0.1:{self.ingress_port}",
            "app_images": self.app_images,
            **self.facts,
        }

    def missing_image(self, app: str) -> str:
        return f"--platform=kind: no image loaded for app {app!r}"

    def close(self) -> None:
        """Delete this run's namespaces, then the cluster if this run created it (unless kept)."""
        self.namespaces.close()
        if self.created and not self.keep:
            _delete_cluster(self.cluster, self.progress)


def _kind(kind: Path, args: list[str], timeout_s: float = 120) -> str:
    proc = subprocess.run(
        [str(kind), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if proc.returncode != 0:
        raise ClusterError(f"`kind {' '.join(args)}` failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def _delete_cluster(cluster: Any, progress: Progress) -> None:
    progress(f"deleting kind cluster {cluster.name!r}")
    try:
        cluster.delete()
    except (subprocess.CalledProcessError, OSError) as exc:
        progress(f"kind delete cluster {cluster.name} failed: {exc}")


def _manifests(release: Release, manifests_dir: Path | None) -> dict[str, Path]:
    from .. import manifests

    try:
        return {
            name: manifests.manifest_path(release, name, manifests_dir=manifests_dir)
            for name in manifests.MANIFESTS
        }
    except manifests.ManifestError as exc:
        raise ClusterError(
            f"--platform=kind: {exc} (offline? give --knative-manifests-dir=DIR holding "
            "serving-crds.yaml, serving-core.yaml and kourier.yaml)"
        ) from None


def _fixture_images(apps: list[str] | None, progress: Progress) -> dict[str, str]:
    """Build the fixture app images (cached) and tag them under dev.local for kind."""
    from .. import images

    client = images.docker_client()
    try:
        names = images.fixture_apps() if apps is None else apps
        refs = {app: fixture_image_name(app) for app in names}
        images.tag_fixture_apps(client, refs, progress=progress)
        return refs
    except images.ImagesError as exc:
        raise ClusterError(f"--platform=kind: fixture app images: {exc}") from None
    finally:
        client.close()
