"""The images of the local platform, made without any registry and cached by their inputs.

- ``knative-drain/base:bookworm``: a Debian root filesystem (debootstrap) imported as an
  image; it is the pod's pause container, the apps' runtime and the offline Go builder.
- ``knative-drain/queue-proxy:<serving version>``: the release image when it can be
  pulled, else Knative's own ``cmd/queue`` built from the Go module, packaged like ko.
- ``knative-drain/app:<name>``: the fixture apps of ``fixtures/apps``.

Every image carries the label ``knative-drain.inputs`` (a hash of what it is made from);
an image whose label matches is reused, so a second provisioning does no work.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.images import Image

from ..host.docker_engine import DockerEngineInfo, docker_client, ensure_engine
from .rootfs import (
    LABEL_INPUTS,
    LABEL_KIND,
    ImageOutcome,
    ImagesError,
    cached_image,
    debian_mirror,
    ensure_rootfs_image,
    inputs_hash,
)
from .rootfs import outcome as _outcome

__all__ = [
    "APP_REPO",
    "BASE_IMAGE",
    "QUEUE_PROXY_REPO",
    "ImageOutcome",
    "ImagesError",
    "ProvisionResult",
    "apps_dir",
    "debian_mirror",
    "docker_client",
    "ensure_app_image",
    "ensure_base_image",
    "ensure_queue_proxy_image",
    "fixture_apps",
    "provision_local",
]

BASE_IMAGE = "knative-drain/base:bookworm"
QUEUE_PROXY_REPO = "knative-drain/queue-proxy"
APP_REPO = "knative-drain/app"
BASE_PACKAGES = (
    "python3",
    "gunicorn",
    "python3-flask",
    "python3-wsproto",
    "python3-grpcio",
    "python3-protobuf",
    "golang-go",
)
# Bump a recipe number when the way an image is made changes: its cache entries expire.
BASE_RECIPE = 1
QUEUE_PROXY_RECIPE = 1
APP_RECIPE = 1
SHARED_SOURCES = "_src"  # fixtures/apps/_src: the code the app images share
DEFAULT_APPS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "apps"
SERVING_MODULE = "knative.dev/serving"
QUEUE_PROXY_DOCKERFILE = """\
FROM scratch
COPY queue /ko-app/queue
ENV KO_DATA_PATH=/var/run/ko
USER 65532:65532
ENTRYPOINT ["/ko-app/queue"]
"""

Progress = Callable[[str], None]


@dataclass
class ProvisionResult:
    """Everything the local platform needs, with how long each step took."""

    engine: DockerEngineInfo
    base: ImageOutcome
    queue_proxy: ImageOutcome
    apps: dict[str, ImageOutcome]
    seconds: float

    @property
    def base_image(self) -> str:
        return self.base.tag

    @property
    def queue_proxy_image(self) -> str:
        return self.queue_proxy.tag

    @property
    def app_images(self) -> dict[str, str]:
        return {name: outcome.tag for name, outcome in self.apps.items()}

    @property
    def all_cached(self) -> bool:
        return all(o.cached for o in (self.base, self.queue_proxy, *self.apps.values()))

    def describe(self) -> dict[str, Any]:
        """Facts for a report: engine, image IDs and how the queue-proxy was obtained."""
        qp = self.queue_proxy.labels
        return {
            **self.engine.describe(),
            "base_image": f"{self.base.tag} ({self.base.image_id[:19]})",
            "queue_proxy_image": f"{self.queue_proxy.tag} ({self.queue_proxy.image_id[:19]})",
            "queue_proxy_source": qp.get("knative-drain.source", "?"),
            "queue_proxy_go_version": qp.get("knative-drain.go-version", "?"),
            "queue_proxy_go_module": qp.get("knative-drain.go-module-version", "?"),
        }


# --- helpers -----------------------------------------------------------------------------


def _build(
    client: docker.DockerClient,
    *,
    path: str,
    tag: str,
    labels: dict[str, str],
    buildargs: dict[str, str] | None = None,
    dockerfile: str = "Dockerfile",
) -> Image:
    """``docker build`` (legacy builder) that raises ImagesError with the build log tail."""
    try:
        image, _log = client.images.build(
            path=path,
            dockerfile=dockerfile,
            tag=tag,
            labels=labels,
            buildargs=buildargs or {},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        lines = [str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log]
        tail = "".join(lines)[-1500:]
        raise ImagesError(f"docker build of {tag} failed: {exc.msg}\n{tail}") from None
    except docker.errors.APIError as exc:
        raise ImagesError(f"docker build of {tag} failed: {exc.explanation or exc}") from None
    return image


# --- base image --------------------------------------------------------------------------


def ensure_base_image(client: docker.DockerClient, progress: Progress = print) -> ImageOutcome:
    """``knative-drain/base:bookworm`` by debootstrap, unless one of the same inputs exists."""
    return ensure_rootfs_image(
        client, BASE_IMAGE, BASE_PACKAGES, kind="base", recipe=BASE_RECIPE, progress=progress
    )


# --- queue-proxy -------------------------------------------------------------------------

_SERVING_VERSION = re.compile(r"^1\.(\d+)\.(\d+)$")
_GO_MODULE_VERSION = re.compile(r"^v0\.(\d+)\.(\d+)$")


def check_versions(serving_version: str, go_module_version: str) -> None:
    """Reject versions that are malformed or not the same release (1.X.Y = v0.(X+27).Y)."""
    s = _SERVING_VERSION.match(serving_version)
    g = _GO_MODULE_VERSION.match(go_module_version)
    if not s:
        raise ImagesError(f"serving_version {serving_version!r}: expected 1.X.Y, e.g. 1.14.2")
    if not g:
        raise ImagesError(f"go_module_version {go_module_version!r}: expected v0.N.Y, e.g. v0.41.2")
    expected = f"v0.{int(s[1]) + 27}.{s[2]}"
    if go_module_version != expected:
        raise ImagesError(
            f"go_module_version {go_module_version} is not Knative {serving_version}: "
            f"its Go module version is {expected}"
        )


def build_queue_binary(go_module_version: str, workdir: Path) -> tuple[Path, str]:
    """Build Knative's ``cmd/queue`` from the module source: (binary path, its Go version).

    ``go install module@version`` is refused (serving's go.mod has replace directives), so
    the module is downloaded, copied out of the read-only module cache and built in place
    (module mode: the zip ships an empty vendor/modules.txt).
    """
    from . import gomod

    try:
        info = gomod.download(SERVING_MODULE, go_module_version)
        src = gomod.writable_copy(Path(info["Dir"]), workdir / "serving")
        gomod.build({"./cmd/queue": "queue"}, src, cwd=src)
        binary = src / "queue"
        return binary, gomod.go_version_of(binary)
    except gomod.GoBuildError as exc:
        raise ImagesError(
            f"no queue-proxy image could be pulled and building one failed: {exc}"
        ) from None


def ensure_queue_proxy_image(
    client: docker.DockerClient,
    serving_version: str,
    go_module_version: str,
    release_image: str | None = None,
    progress: Progress = print,
) -> ImageOutcome:
    """``knative-drain/queue-proxy:<serving_version>``: pulled release image, else built.

    The cache key is the release (serving + Go module version): a pulled and a built image
    are the same program, and the label ``knative-drain.source`` says which one it is.
    """
    started = time.monotonic()
    check_versions(serving_version, go_module_version)
    tag = f"{QUEUE_PROXY_REPO}:{serving_version}"
    digest = inputs_hash("queue-proxy", QUEUE_PROXY_RECIPE, serving_version, go_module_version)
    image = cached_image(client, tag, digest)
    if image is not None:
        return _outcome(image, tag, True, started)
    labels = {
        LABEL_INPUTS: digest,
        LABEL_KIND: "queue-proxy",
        "knative-drain.serving-version": serving_version,
        "knative-drain.go-module-version": go_module_version,
    }
    with tempfile.TemporaryDirectory(prefix="knative-drain-qp-") as tmp:
        ctx = Path(tmp) / "context"
        ctx.mkdir()
        if release_image and _pull(client, release_image, progress):
            (ctx / "Dockerfile").write_text(f"FROM {release_image}\n")
            labels.update(
                {"knative-drain.source": "pulled", "knative-drain.release-image": release_image}
            )
            labels["knative-drain.go-version"] = "release"
        else:
            from .knative import check_served

            check_served(serving_version)  # a refused version: one line naming the nearest
            progress(
                f"building queue-proxy from {SERVING_MODULE}@{go_module_version} (about a minute)"
            )
            binary, go_version = build_queue_binary(go_module_version, Path(tmp))
            shutil.move(str(binary), ctx / "queue")
            (ctx / "Dockerfile").write_text(QUEUE_PROXY_DOCKERFILE)
            labels.update({"knative-drain.source": "built", "knative-drain.go-version": go_version})
        image = _build(client, path=str(ctx), tag=tag, labels=labels)
    return _outcome(image, tag, False, started)


def _pull(client: docker.DockerClient, reference: str, progress: Progress) -> bool:
    """Try once to pull the release image; False (and why) when no registry answers."""
    try:
        client.images.pull(reference)
    except docker.errors.APIError as exc:
        progress(f"pull of {reference} failed ({exc.explanation or exc}); building instead")
        return False
    return True


# --- fixture apps ------------------------------------------------------------------------


def apps_dir() -> Path:
    """The fixture apps' directory: ``KNATIVE_DRAIN_APPS_DIR``, else the checkout's,
    else the copy installed as package data (non-editable installs)."""
    override = os.environ.get("KNATIVE_DRAIN_APPS_DIR")
    if override:
        return Path(override)
    if DEFAULT_APPS_DIR.is_dir():
        return DEFAULT_APPS_DIR
    return Path(__file__).resolve().parents[1] / "fixture_data" / "apps"


def fixture_apps() -> list[str]:
    """Names of the fixture apps: the directories of :func:`apps_dir` with a Dockerfile."""
    root = apps_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/Dockerfile"))


def _tree_digest(root: Path) -> list[list[str]]:
    """(relative path, sha256) of every file under ``root``: what a build context holds."""
    return [
        [str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest()]
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]


def _build_args(dockerfile: str, base_image: str) -> dict[str, str]:
    """The offline values of the build args the Dockerfile declares (BASE_IMAGE, GO_BUILDER)."""
    declared = set(re.findall(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile, re.MULTILINE))
    return {name: base_image for name in ("BASE_IMAGE", "GO_BUILDER") if name in declared}


def ensure_app_image(
    client: docker.DockerClient, name: str, base_image: str = BASE_IMAGE
) -> ImageOutcome:
    """``knative-drain/app:<name>`` from ``fixtures/apps/<name>``, rebuilt when its files,
    or the base image it builds on, change."""
    started = time.monotonic()
    known = fixture_apps()
    if name not in known:
        raise ImagesError(f"unknown fixture app {name!r}; accepted values: {', '.join(known)}")
    root = apps_dir()
    src = root / name
    args = _build_args((src / "Dockerfile").read_text(), base_image)
    base_id = client.images.get(base_image).id
    # the build context is the apps dir: the app's Dockerfile plus the shared sources
    inputs = [_tree_digest(src), _tree_digest(root / SHARED_SOURCES)]
    digest = inputs_hash("app", APP_RECIPE, name, args, base_id, inputs)
    tag = f"{APP_REPO}:{name}"
    image = cached_image(client, tag, digest)
    if image is not None:
        return _outcome(image, tag, True, started)
    labels = {LABEL_INPUTS: digest, LABEL_KIND: "app", "knative-drain.app": name}
    image = _build(
        client,
        path=str(root),
        dockerfile=f"{name}/Dockerfile",
        tag=tag,
        labels=labels,
        buildargs=args,
    )
    return _outcome(image, tag, False, started)


# --- fixture apps for a cluster ------------------------------------------------------------
CLUSTER_APP_REPO = "knative-drain-app"  # <registry>/knative-drain-app:<app> on a cluster


def check_registry(registry: str) -> str:
    """``registry`` without a trailing slash, or ImagesError saying what one looks like."""
    cleaned = registry.strip().rstrip("/")
    if not cleaned or "://" in cleaned or any(c.isspace() for c in cleaned):
        raise ImagesError(
            f"registry {cleaned!r}: a registry host and optional path, e.g. "
            "registry.example.com:5000/team (no scheme)"
        )
    return cleaned


def cluster_app_refs(registry: str, apps: list[str] | None = None) -> dict[str, str]:
    """app -> ``<registry>/knative-drain-app:<app>``: where a cluster pulls the fixture apps."""
    registry = check_registry(registry)
    return {app: f"{registry}/{CLUSTER_APP_REPO}:{app}" for app in apps or fixture_apps()}


def tag_fixture_apps(
    client: docker.DockerClient, refs: dict[str, str], progress: Progress = print
) -> None:
    """Build each fixture app image (cached) and tag it with the name ``refs`` gives it."""
    base = ensure_base_image(client, progress=progress)
    for app, ref in refs.items():
        built = ensure_app_image(client, app, base.tag)
        repo, tag = ref.rsplit(":", 1)
        client.images.get(built.tag).tag(repo, tag)


def push_images(client: docker.DockerClient, refs: list[str], progress: Progress = print) -> None:
    """``docker push`` each reference; ImagesError naming the first that fails."""
    for ref in refs:
        repo, tag = ref.rsplit(":", 1)
        progress(f"push {ref}")
        try:
            for line in client.images.push(repo, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise ImagesError(f"docker push {ref}: {line['error']}")
        except docker.errors.APIError as exc:
            raise ImagesError(f"docker push {ref}: {exc.explanation or exc}") from None


# --- all of it ---------------------------------------------------------------------------


def _with_client(build: Callable[..., ImageOutcome], *args: Any) -> ImageOutcome:
    """Run one image step on a Docker client of its own (for a worker thread)."""
    client = docker_client()
    try:
        return build(client, *args)
    finally:
        client.close()


def provision_local(
    serving_version: str,
    go_module_version: str,
    apps: list[str] | None = None,
    release_image: str | None = None,
    progress: Progress = print,
) -> ProvisionResult:
    """Engine, base, queue-proxy and app images (all fixture apps when ``apps`` is None).

    Idempotent: what exists with the same inputs is reused; each step's time is reported.
    """
    started = time.monotonic()
    check_versions(serving_version, go_module_version)
    names = fixture_apps() if apps is None else list(apps)
    unknown = sorted(set(names) - set(fixture_apps()))
    if unknown:
        raise ImagesError(
            f"unknown fixture app(s) {', '.join(unknown)}; accepted values: "
            f"{', '.join(fixture_apps())}"
        )

    def step(label: str, outcome: ImageOutcome) -> ImageOutcome:
        how = "cached" if outcome.cached else "made"
        progress(f"{label}: {outcome.tag} {how} in {outcome.seconds:.1f} s")
        return outcome

    t = time.monotonic()
    engine = ensure_engine()
    progress(f"docker engine {engine.server_version} ready in {time.monotonic() - t:.1f} s")
    client = docker_client()
    try:
        # debootstrap is mostly download and unpacking, the queue-proxy mostly a Go compile:
        # at once they take the longer of the two (66 s and 92 s apart on a fresh 2-core
        # machine). Each thread has its own client: docker-py's session is not shared.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-proxy") as pool:
            qp_future = pool.submit(
                _with_client,
                ensure_queue_proxy_image,
                serving_version,
                go_module_version,
                release_image,
                progress,
            )
            base = step("base image", ensure_base_image(client, progress))
            qp = step("queue-proxy image", qp_future.result())
        made = {name: step(f"app image {name}", ensure_app_image(client, name)) for name in names}
    finally:
        client.close()
    total = time.monotonic() - started
    progress(f"local platform provisioned in {total:.1f} s")
    return ProvisionResult(engine=engine, base=base, queue_proxy=qp, apps=made, seconds=total)
