"""Release manifests: cache, air-gapped directory, the queue-proxy image of a release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pytest_knative_drain.knative import catalog, manifests

RELEASE = catalog.resolve("1.14.2")


def test_manifests_dir_is_used_and_checked(tmp_path: Path) -> None:
    (tmp_path / "serving-core.yaml").write_text("kind: Namespace\n")
    path = manifests.manifest_path(RELEASE, "serving-core", manifests_dir=tmp_path)
    assert path == tmp_path / "serving-core.yaml"
    with pytest.raises(manifests.ManifestError, match="--knative-manifests-dir"):
        manifests.manifest_path(RELEASE, "kourier", manifests_dir=tmp_path)
    with pytest.raises(manifests.ManifestError, match="accepted values"):
        manifests.manifest_path(RELEASE, "istio", manifests_dir=tmp_path)


def test_cached_manifest_is_served_without_network(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = manifests.cache_dir() / RELEASE.version / "serving-core.yaml"
    with pytest.raises(manifests.ManifestError, match="not cached"):
        manifests.manifest_path(RELEASE, "serving-core", fetch=False)
    target.parent.mkdir(parents=True)
    target.write_text("kind: Namespace\n")
    assert manifests.manifest_path(RELEASE, "serving-core", fetch=False) == target


def test_queue_proxy_image_from_knatives_own_cache_manifest() -> None:
    """Knative's source config/core/999-cache.yaml (from the Go module) holds the Image
    resource; in source it is a ko:// reference, which is not a pullable image."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"knative.dev/serving@{RELEASE.go_module_version}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_go_env(),
    )
    if proc.returncode != 0:
        pytest.skip(f"Go module proxy unavailable: {proc.stderr[-300:]}")
    source = Path(json.loads(proc.stdout)["Dir"]) / "config/core/999-cache.yaml"
    docs = manifests.documents(source)
    assert manifests.queue_proxy_image(docs) is None  # ko:// in source
    released = [dict(d) for d in docs]
    pinned = "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:" + "a" * 64
    released[0] = {**released[0], "spec": {"image": pinned}}
    assert manifests.queue_proxy_image(released) == pinned


def _go_env() -> dict[str, str]:
    import os

    return {**os.environ, "GOFLAGS": "-mod=mod"}
