"""The kind command, built from its Go module (``go install sigs.k8s.io/kind@VERSION``).

A node image works only with the kind release whose base files it carries
(``node_image.kind_base_files``), so both come from the same module version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..host.docker_engine import state_dir
from . import gomod

KIND_VERSION = "v0.24.0"  # the newest kind the module proxy serves here that we verified


def ensure_kind(version: str = KIND_VERSION, progress: Callable[[str], None] = print) -> Path:
    """Path of ``kind`` at ``version``, built once into the cache (about a minute cold)."""
    out_dir = state_dir() / "bin" / f"kind-{version}"
    binary = out_dir / "kind"
    if binary.is_file():
        return binary
    progress(f"building kind {version} from sigs.k8s.io/kind")
    out_dir.mkdir(parents=True, exist_ok=True)
    gomod.run_go(
        ["install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kind@{version}"],
        cwd=out_dir,
        env=gomod.go_env(GOBIN=str(out_dir), GOFLAGS=""),
        what=f"go install sigs.k8s.io/kind@{version}",
    )
    if not binary.is_file():
        raise gomod.GoBuildError(f"go install sigs.k8s.io/kind@{version} left no {binary}")
    return binary
