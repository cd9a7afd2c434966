"""actionlint, the GitHub Actions workflow linter, built from its Go module
(``go install github.com/rhysd/actionlint/cmd/actionlint@VERSION``).

It checks the example workflow (``.github/workflows/conformance.yml``): expressions,
matrix keys, action inputs, and the ``run:`` scripts through shellcheck when a
``shellcheck`` is on PATH (actionlint skips that check silently otherwise).

Probed on the module proxy here (2026-12-01, ``.info``/``.mod``/``.zip`` each): v1.6.26,
v1.6.27 and v1.7.0 to v1.7.12 all resolve (the ``@v/list`` shows only some of them);
v1.7.13 to v1.7.16, v1.7.20, v1.8.0 and v2.0.0 are refused (403, which the mirror also
answers for versions that do not exist). v1.7.12 (2026-03-30) is used.

``python -m pytest_knative_drain.builders.actionlint ARGS`` builds it once and runs it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..host.docker_engine import state_dir
from . import gomod

MODULE = "github.com/rhysd/actionlint"
ACTIONLINT_VERSION = "v1.7.12"  # the newest the module proxy serves here


def ensure_actionlint(
    version: str = ACTIONLINT_VERSION, progress: Callable[[str], None] = print
) -> Path:
    """Path of ``actionlint`` at ``version`` (or the nearest lower patch the proxy serves),
    built once into the cache (about a minute cold)."""
    out_dir = state_dir() / "bin" / f"actionlint-{version}"
    binary = out_dir / "actionlint"
    if binary.is_file():
        return binary
    used = gomod.nearest_resolvable(MODULE, version)
    if used is None:
        raise gomod.GoBuildError(f"{MODULE} {version}: no patch release of it resolves")
    if used != version:
        progress(str(gomod.Substitution(MODULE, version, used)))
    progress(f"building actionlint {used} from {MODULE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    package = f"{MODULE}/cmd/actionlint@{used}"
    gomod.run_go(
        ["install", "-trimpath", "-ldflags", "-s -w", package],
        cwd=out_dir,
        env=gomod.go_env(GOBIN=str(out_dir), GOFLAGS=""),
        what=f"go install {package}",
    )
    if not binary.is_file():
        raise gomod.GoBuildError(f"go install {package} left no {binary}")
    return binary


def main(argv: list[str] | None = None) -> int:
    """Build actionlint if needed (progress on stderr), then run it with ``argv``."""
    try:
        binary = ensure_actionlint(progress=lambda line: print(line, file=sys.stderr))
    except gomod.GoBuildError as exc:
        print(f"actionlint: {exc}", file=sys.stderr)
        return 2
    args = sys.argv[1:] if argv is None else argv
    return subprocess.run([str(binary), *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
