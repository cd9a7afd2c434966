"""Cases at once on the real local platform: pods overlap, one report, one JUnit, and an
interrupted concurrent run leaves no container.

Three short cases (deletion-timeliness: 10 requests of 5 s, the pod deleted at 1 s, gone
after queue-proxy's 30 s quiet period) of three apps, each with its own pod.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conformance_cmd import conformance_cmd
from signal_trial import OWNER_LABEL, _default_signals, _docker_names

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
APPS = ("go-shutdown", "go-exit", "python-gunicorn-exec")
SELECT = "deletion_timeliness and not internal_tls and (go_shutdown or go_exit or gunicorn_exec)"


def _cmd(out: Path, *extra: str) -> list[str]:
    return conformance_cmd(
        "1.14",
        SELECT,
        f"--drain-report={out / 'drain-report.json'}",
        f"--junitxml={out / 'junit.xml'}",
        *extra,
    )


def test_cases_run_at_once_into_one_report_and_one_junit(tmp_path: Path) -> None:
    proc = subprocess.run(
        _cmd(tmp_path, "-rA"), cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "running 3 case(s), up to 3 at once" in proc.stdout
    report = json.loads((tmp_path / "drain-report.json").read_text())
    assert report["environment"]["drain_concurrency"] == "3 (auto)"
    results = report["scenarios"]
    assert sorted(r["app"] for r in results) == sorted(APPS)
    assert all(r["outcome"] == "ok" and r["verdict"] == "pass" for r in results), results
    # each pod's life from its "scheduled" to its "gone" event (wall clock): they overlap
    lives = {}
    for r in results:
        names = {e["name"]: e["wall"] for e in r["events"]}
        lives[r["app"]] = (names["scheduled"], names["gone"])
    assert max(s for s, _ in lives.values()) < min(g for _, g in lives.values()), lives
    pods = {e["pod"] for r in results for e in r["events"]}
    assert len(pods) == 3  # one pod each
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = [tc.get("name") for tc in suite.iter("testcase")]
    assert sorted(cases) == sorted(f"test_pod_delete[deletion-timeliness-{a}]" for a in APPS)
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert proc.stdout.count("knative drain verdicts") == 1  # one table for the run


def test_interrupted_concurrent_run_leaves_no_container(tmp_path: Path) -> None:
    """SIGTERM while all three pods run: every container of the run is removed, exit 2."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (tmp_path / "out.txt").open("w") as out:
        proc = subprocess.Popen(
            _cmd(tmp_path),
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_signals,
        )
        try:
            label = f"{OWNER_LABEL}={proc.pid}"
            deadline = time.monotonic() + 300
            # 3 pods x (pause, queue-proxy, app); the preflight's pods come one at a time first
            while len(_docker_names("container", label)) < 9:
                assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-4000:]
                assert time.monotonic() < deadline, "the three pods never ran at once"
                time.sleep(0.2)
            time.sleep(2)  # requests in flight
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = (tmp_path / "out.txt").read_text()
    assert _docker_names("container", label) == [], output[-4000:]
    assert code == 2, output[-4000:]
    assert "run interrupted by SIGTERM" in output
    assert "Traceback (most recent call last)" not in output
