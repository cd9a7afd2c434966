"""``--platform=kind``: preflight checks (first increment; cluster creation comes next).

kind supports a node image only with the kind release that built it, so the kind binary
(from PATH or ``kind_path``) must be at least ``release.min_kind_version``; pytest-kind's
own default (v0.17) makes Kubernetes 1.25, below what Knative 1.14+ accepts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..catalog import Release
from .cluster import ClusterError

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
