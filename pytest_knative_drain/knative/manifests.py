"""Knative release manifests: fetched once per version and cached, or read from a directory.

Used by the kind platform (what to apply) and by the local platform (which
queue-proxy image a release ships: the ``Image`` resource named queue-proxy in
serving-core.yaml, digest-pinned in releases).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
import yaml
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..host.docker_engine import state_dir
from .catalog import Release

MANIFESTS = ("serving-crds", "serving-core", "kourier")


class ManifestError(RuntimeError):
    """A release manifest could not be had."""


def cache_dir() -> Path:
    return state_dir() / "manifests"


def manifest_path(
    release: Release, name: str, *, manifests_dir: Path | None = None, fetch: bool = True
) -> Path:
    """Local path of ``name`` (serving-crds, serving-core, kourier) for ``release``.

    From ``manifests_dir`` when given (air-gapped clusters), else the per-version
    cache, downloading it from the release URL on first use.
    """
    if name not in MANIFESTS:
        raise ManifestError(f"manifest {name!r}: accepted values: {', '.join(MANIFESTS)}")
    if manifests_dir is not None:
        path = manifests_dir / f"{name}.yaml"
        if not path.is_file():
            raise ManifestError(f"--knative-manifests-dir: {path} does not exist")
        return path
    url = release.manifest_urls()[f"{name}.yaml"]
    version = release.kourier_version if name == "kourier" else release.version
    path = cache_dir() / version / f"{name}.yaml"
    if path.is_file():
        return path
    if not fetch:
        raise ManifestError(f"{name}.yaml for {version} is not cached ({path})")
    try:
        text = _download(url)
    except requests.RequestException as exc:
        raise ManifestError(f"could not download {url}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(text)
    tmp.replace(path)  # never leave a half-written manifest in the cache
    return path


@retry(
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=1, max=8),
    retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout)),
    reraise=True,
)
def _download(url: str) -> str:
    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return response.text


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a multi-document manifest, empty ones dropped."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def queue_proxy_image(docs: list[dict[str, Any]]) -> str | None:
    """The queue-proxy image a release ships (caching.internal.knative.dev Image)."""
    for doc in docs:
        if doc.get("kind") == "Image" and doc.get("metadata", {}).get("name") == "queue-proxy":
            image = doc.get("spec", {}).get("image")
            return image if image and not image.startswith("ko://") else None
    return None


def release_queue_proxy_image(release: Release) -> tuple[str | None, str]:
    """(image, why): the release's queue-proxy image, or None with the reason it is unknown."""
    try:
        path = manifest_path(release, "serving-core")
    except ManifestError as exc:
        return None, str(exc)
    image = queue_proxy_image(documents(path))
    return image, ("from " + str(path)) if image else f"no queue-proxy Image in {path}"
