"""The command line of a conformance run on the local platform, for tests that run the
suite in a child pytest (one place instead of a copy per test module)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def conformance_cmd(version: str, select: str, *extra: str, suite: Path | None = None) -> list[str]:
    """``python -m pytest <suite> --platform=local --knative-version=<version> -k <select>
    -p no:cacheprovider <extra>``; ``suite`` defaults to the checkout's ``conformance/``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(suite or ROOT / "conformance"),
        "--platform=local",
        f"--knative-version={version}",
        "-k",
        select,
        "-p",
        "no:cacheprovider",
        *extra,
    ]
