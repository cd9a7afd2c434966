"""``--platform=kind``: a kind cluster with Knative Serving + Kourier for one catalog release.

Two sources for what the cluster runs. With registry access: the release's node image
(kind on PATH, at least ``release.min_kind_version``: kind supports a node image only with
the kind release that built it) and the release manifests. With none (this machine), or
when asked: ``builders.stack`` builds kind, a node image, Knative Serving and Kourier here,
and the kind images are loaded into the nodes. The cluster is made through the kind
command with time bounds (``kind_cluster``), then the steps of ``kind_plan.kind_steps``
run through the kubernetes client: the plan ``knative-drain plan`` prints is what runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from ..host.docker_engine import state_dir
from ..knative import kind_plan
from ..knative import kubernetes as kube_versions
from ..knative.catalog import Release
from ..knative.kubernetes import KubernetesChoice
from ..matrix.configs import KnativeConfig
from ..matrix.scenarios import Scenario
from .cluster.api import (
    ClusterError,
    Progress,
    api_client,
    knative_serving_version,
    kubernetes_version,
    wait_deployments_available,
    wait_pods_ready,
)
from .cluster.apply import Applier
from .cluster.changes import ConfigMapPatch
from .cluster.ingress import IngressAddress
from .cluster.knative_config import KnativeConfigPatch
from .existing import refuse_unwired
from .kind_cluster import KindCluster, install_pod_network
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


def node_container_fault(node: str) -> str | None:
    """Why kind node ``node`` (a Docker container of that name) cannot run pods: stopped,
    paused or removed. Kubernetes says so only after the node's 40 s grace (NotReady);
    Docker says it at once. None when it runs, or when Docker cannot say."""
    import docker.errors

    from ..host.docker_engine import docker_client

    try:
        client = docker_client(timeout=10)
        try:
            state = client.api.inspect_container(node)["State"]
        finally:
            client.close()
    except docker.errors.NotFound:
        return f"kind node {node}: its container was removed"
    except (docker.errors.DockerException, OSError):
        return None  # Docker itself unreachable: the node's Ready condition decides
    if state.get("Paused"):
        return f"kind node {node}: its container is paused"
    if state.get("Status") != "running":
        return (
            f"kind node {node}: its container is {state.get('Status')} "
            f"(exit code {state.get('ExitCode')}, finished {state.get('FinishedAt')})"
        )
    return None


def _print(message: str) -> None:
    print(f"[knative-drain] {message}")


def fixture_image_name(app: str) -> str:
    """The name a fixture app image gets in the cluster: under ``dev.local``, so Knative
    does not try to resolve its tag in a registry (kind_plan.LOCAL_REGISTRIES)."""
    return f"dev.local/knative-drain-app:{app}"


class KindPlatform(ServingPlatform):
    """A kind cluster running Knative Serving; deleted at the end unless kept."""

    def __init__(
        self,
        cluster: KindCluster,
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
            ingress=IngressAddress(
                f"http://127.0.0.1:{host_port}",
                f"Kourier NodePort {kind_plan.NODE_PORT} mapped to 127.0.0.1:{host_port} by kind",
            ),
            app_images=app_images,
            progress=progress,
            keep=keep,
            facts=facts,
            # --keep-cluster keeps the cluster; cases left standing would pile up and starve
            # the next ones of CPU on a kind node (the reason: 1.875 of 2 cores requested
            # by the control plane, Knative and Kourier alone)
            keep_namespaces=False,
        )
        self.cluster = cluster
        self.release = release
        self.created = created
        self.node_probe = node_container_fault

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
        kubeconfig: Path | None = None,
        build: str = "auto",
        kubernetes: KubernetesChoice | None = None,
        progress: Progress = _print,
    ) -> KindPlatform:
        """Preflight (kind, Docker, images, manifests), cluster, Knative install, image load.

        ``build``: "release" uses the release's node image and manifests (kind on PATH),
        "here" builds kind, the node image, Serving and Kourier on this machine
        (``builders.stack``), "auto" builds when the release manifests cannot be had.
        Fails fast, before any cluster exists, on a missing/old kind, no Docker, a bad
        image name or a missing manifest. A cluster it created is deleted again if a later
        step fails (unless ``keep``); an existing cluster is reused only with ``keep``.
        The context ``kind-<name>`` goes where kind puts it (``kubeconfig``, else
        $KUBECONFIG or ~/.kube/config, made current), so ``--platform=existing`` finds a
        kept cluster with no flags, as for any cluster kind made.
        """
        docker_version = check_docker()
        images = (app_image,) if app_image else ()
        try:
            kind_plan.kind_steps(
                release,
                cluster_name=cluster_name,
                host_port=host_port,
                workers=workers,
                app_images=images,
            )
        except kind_plan.KindPlanError as exc:
            raise ClusterError(f"--platform=kind: {exc}") from None
        kubernetes = kubernetes or kube_versions.default_for(release)
        stack, sources = _stack_and_manifests(release, manifests_dir, build, kubernetes, progress)
        if stack is not None:
            kind, kind_version = stack.kind, stack.kind_version
        else:
            kind, kind_version = find_kind(release, kind_path)
        app_images = {"custom": app_image} if app_image else _fixture_images(apps, progress)
        runtime = _privileged_runtime(progress)
        home = state_dir() / "kind" / cluster_name  # the kind config of the last run
        home.mkdir(parents=True, exist_ok=True)
        cluster = KindCluster(kind, cluster_name, kubeconfig)
        reuse = cluster.exists()
        if reuse and not keep:
            raise ClusterError(
                f"--platform=kind: a kind cluster named {cluster_name!r} already exists; pass "
                f"--keep-cluster to reuse it, or delete it (kind delete cluster --name "
                f"{cluster_name}, or knative-drain cleanup)"
            )
        created = not reuse
        node_image = stack.node_image if stack else release.kind_node_image
        config = home / "kind-config.yaml"
        config.write_text(
            yaml.safe_dump(
                kind_plan.render_kind_config(
                    release,
                    host_port=host_port,
                    workers=workers,
                    node_image=node_image,
                    default_cni=stack is None,
                ),
                sort_keys=False,
            )
        )
        progress(
            f"{'reusing' if reuse else 'creating'} kind cluster {cluster_name!r} "
            f"(kind {kind_version}, {node_image.split('@')[0]}, {1 + workers} node(s))"
        )
        facts: dict[str, Any] = {
            "kind_version": kind_version,
            "kind_node_image": node_image,  # what the nodes run, built here or the release pin
            "docker_version": docker_version,
            "cluster_name": cluster_name,
            "reused_cluster": reuse,
        }
        if runtime:
            facts["privileged_runtime"] = runtime
        if stack is not None:
            facts.update(stack.describe())
        timings: dict[str, float] = {}
        try:
            t = time.monotonic()
            if reuse:  # kind writes a kubeconfig only on create: export the kept cluster's
                cluster.export_kubeconfig()
            else:
                cluster.create(config)
            api = api_client(cluster.kubeconfig, cluster.context)
            try:
                k8s.VersionApi(api).get_code(_request_timeout=15)
            except (ApiException, Urllib3Error, OSError) as exc:
                raise ClusterError(
                    f"--platform=kind: the API server of kind cluster {cluster_name!r} "
                    f"({api.configuration.host}) does not answer: {exc}"
                ) from None
            if reuse:
                _check_kept_cluster(cluster, node_image, host_port, workers)
            if stack is not None:
                install_pod_network(api, progress)
            timings["cluster_up_s"] = time.monotonic() - t
            platform = cls(
                cluster,
                api,
                release=release,
                run_id=run_id,
                host_port=host_port,
                created=created,
                keep=keep,
                app_images=app_images,
                progress=progress,
                facts=facts,
            )
            t = time.monotonic()
            platform.load_images(sorted(set(stack.load_images if stack else [])))
            platform.install(sources)
            platform.check_ingress()
            timings["install_s"] = time.monotonic() - t
            t = time.monotonic()
            platform.load_images(sorted(set(app_images.values())))
            timings["app_images_s"] = time.monotonic() - t
            platform.facts["kubernetes_version"] = kubernetes_version(api)
            platform.facts["setup_s"] = {k: round(v, 1) for k, v in timings.items()}
        except BaseException:
            if created and not keep:
                _delete_cluster(cluster, progress)
            raise
        if keep:
            where = f"--kubeconfig {cluster.kubeconfig} " if cluster.kubeconfig else ""
            progress(f"cluster kept: {where}--context {cluster.context}")
        return platform

    def install(self, sources: dict[str, Path], *, timeout_s: float = 600.0) -> None:
        """kind_plan's install steps with the kubernetes client (skipped if already there)."""
        from ..knative import manifests

        have, _ = knative_serving_version(self.api)
        if have == self.release.version and _installed(self.api):
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
                self.api,
                "config-network",
                {"ingress-class": kind_plan.KOURIER_INGRESS_CLASS},
                progress=self.progress,
            ).apply()
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
            self.cluster.load_image(image)

    def describe(self) -> dict[str, Any]:
        """Facts for the report's environment section."""
        return {
            "platform": "kind",
            "knative_version": self.release.version,
            "node_image": self.facts.get("kind_node_image", self.release.kind_node_image),
            "ingress": f"{self.ingress.url} ({self.ingress.how})",
            "ingress_url": self.ingress.url,
            "app_images": self.app_images,
            **self.facts,
        }

    def missing_image(self, app: str) -> str:
        return f"--platform=kind: no image loaded for app {app!r}"

    def configure(self, config: KnativeConfig, scenario: Scenario) -> KnativeConfigPatch:
        """The scenario's Knative configuration; internal-tls is skipped with the reason."""
        refuse_unwired(config)
        return super().configure(config, scenario)

    def close(self) -> None:
        """Delete this run's namespaces, then the cluster if this run created it (unless kept)."""
        self.namespaces.close()
        if self.created and not self.keep:
            _delete_cluster(self.cluster, self.progress)


def _delete_cluster(cluster: KindCluster, progress: Progress) -> None:
    progress(f"deleting kind cluster {cluster.name!r}")
    try:
        cluster.delete()
    except ClusterError as exc:
        progress(f"kind delete cluster {cluster.name} failed: {exc}")


def _installed(api: Any) -> bool:
    """Every Deployment in knative-serving and kourier-system exists and is Available: a
    kept cluster whose install stopped half-way is installed again, not taken as done."""
    apps = k8s.AppsV1Api(api)
    for namespace in ("knative-serving", "kourier-system"):
        try:
            deployments = apps.list_namespaced_deployment(namespace, _request_timeout=15).items
        except (ApiException, Urllib3Error, OSError):
            return False
        if not deployments:
            return False
        for dep in deployments:
            available = any(
                c.type == "Available" and c.status == "True" for c in (dep.status.conditions or [])
            )
            if not available:
                return False
    return True


def _check_kept_cluster(
    cluster: KindCluster, node_image: str, host_port: int, workers: int
) -> None:
    """A kept cluster must be the one asked for: node count, node image and port mapping."""
    import docker
    import docker.errors

    nodes = cluster.nodes()
    want = 1 + workers
    problems = []
    if len(nodes) < want:  # more workers than needed change nothing a case relies on
        problems.append(f"{len(nodes)} node(s), this run needs {want} (workers={workers})")
    client = docker.from_env(timeout=30)
    try:
        for node in nodes:
            try:
                attrs = client.containers.get(node).attrs
            except docker.errors.NotFound:
                problems.append(f"node container {node} not found")
                continue
            image = attrs["Config"]["Image"]
            if image not in (node_image, node_image.split("@")[0]):
                problems.append(f"node {node} runs {image}, this run needs {node_image}")
            ports = attrs["HostConfig"].get("PortBindings") or {}
            if node.endswith("-control-plane"):
                bound = {b.get("HostPort") for b in ports.get(f"{kind_plan.NODE_PORT}/tcp") or []}
                if str(host_port) not in bound:
                    problems.append(
                        f"NodePort {kind_plan.NODE_PORT} is published on "
                        f"{sorted(bound) or 'no port'}, not {host_port}"
                    )
    finally:
        client.close()
    if problems:
        raise ClusterError(
            f"--keep-cluster: the kept cluster {cluster.name!r} does not match this run: "
            f"{'; '.join(problems)}; delete it (knative-drain cleanup) or run as it was made"
        )


def _privileged_runtime(progress: Progress) -> str | None:
    from ..host.privileged_runtime import PrivilegedRuntimeError, ensure_privileged_runtime

    try:
        return ensure_privileged_runtime(progress)
    except PrivilegedRuntimeError as exc:
        raise ClusterError(f"--platform=kind: {exc}") from None


def _stack_and_manifests(
    release: Release,
    manifests_dir: Path | None,
    build: str,
    kubernetes: KubernetesChoice,
    progress: Progress,
) -> tuple[Any, dict[str, Path]]:
    """(built stack or None, manifest paths): release artefacts, or everything built here."""
    if build not in ("auto", "release", "here"):
        raise ClusterError(f"--kind-build={build!r}: accepted values: auto, release, here")
    if build != "here":
        try:
            return None, _manifests(release, manifests_dir)
        except ClusterError as exc:
            if build == "release" or manifests_dir is not None:
                raise
            progress(f"release artefacts unavailable ({exc}); building the stack here")
    from ..builders.gomod import GoBuildError
    from ..builders.rootfs import ImagesError as BuildImagesError
    from ..builders.stack import build_kind_stack

    try:
        stack = build_kind_stack(
            release.version,
            progress,
            kubernetes_version=kubernetes.version,
            kind_version=kubernetes.kind_version,
            kubernetes_reason=kubernetes.reason,
        )
    except (GoBuildError, BuildImagesError) as exc:
        raise ClusterError(f"--platform=kind: building the cluster stack failed: {exc}") from None
    names = ("serving-crds", "serving-core", "kourier")
    return stack, {name: stack.manifests_dir / f"{name}.yaml" for name in names}


def _manifests(release: Release, manifests_dir: Path | None) -> dict[str, Path]:
    from ..knative import manifests

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
    from ..builders import images

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
