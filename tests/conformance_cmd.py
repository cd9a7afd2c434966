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


def run_pod_delete_cases(
    out: Path, version: str, cases: tuple[str, ...], timeout_s: float
) -> tuple[str, dict]:
    """Run ``cases`` (ids of conformance/test_pod_delete.py) in a child pytest writing its
    drain report and log under ``out``; (its stdout, the report). The run must pass."""
    return run_family_cases(out, version, "pod_delete", cases, timeout_s)


def run_family_cases(
    out: Path, version: str, family: str, cases: tuple[str, ...], timeout_s: float
) -> tuple[str, dict]:
    """Run ``cases`` (ids of conformance/test_<family>.py) in a child pytest writing its
    drain report and log under ``out``; (its stdout, the report). The run must pass."""
    import json
    import subprocess

    proc = subprocess.run(
        conformance_cmd(
            version,
            " or ".join(f"test_{family}[{c}]" for c in cases),
            f"--drain-report={out / 'drain-report.json'}",
            "-rA",
            suite=ROOT / "conformance" / f"test_{family}.py",
        ),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "drain-report.json").read_text())
