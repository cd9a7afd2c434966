"""The ``knative-drain`` console script, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from misbehaving_servers import LoopbackServer

CLI = [sys.executable, "-m", "pytest_knative_drain.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_load_against_a_good_server_writes_the_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    with LoopbackServer("ok") as srv:
        proc = run(
            "load",
            srv.url + "?sleep=300",
            "--requests",
            "40",
            "--concurrency",
            "40",
            "--json",
            str(out),
        )
        assert srv.requests == 40
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    for key in ("total", "ok", "failures", "strict_sli", "upstream_sli", "start_skew_s", "classes"):
        assert key in summary
    assert (summary["total"], summary["ok"], summary["strict_sli"]) == (40, 40, 1.0)
    assert len(doc["records"]) == 40
    assert doc["records"][0]["pod"] == "pod-a"
    assert "strict SLI 1.0000" in proc.stdout


def test_load_against_a_502_server_fails_with_the_diagnosis(tmp_path: Path) -> None:
    with LoopbackServer("bad_gateway") as srv:
        proc = run("load", srv.url, "--requests", "5", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 1
    assert "queue-proxy" in proc.stdout and "SIGTERM" in proc.stdout
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["summary"]["classes"] == {"http_5xx": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["load", "https://127.0.0.1:1/", "--requests", "1"], "only http://"),
        (["load", "http://127.0.0.1:1/", "--requests", "0"], "--requests=0"),
        (["load", "http://127.0.0.1:1/", "--requests", "1", "--timeout", "-1"], "--timeout=-1"),
        (["plan", "--knative-version", "9.9"], "--knative-version=9.9"),
        (["plan", "--workers", "9"], "workers=9"),
        (["provision", "--platform", "existing"], "--platform=existing"),
        (["push-apps", "--registry", "https://reg.example.com"], "no scheme"),
        (["push-apps", "--registry", "reg.example.com", "--app", "nope"], "--app nope"),
    ],
)
def test_bad_input_is_a_usage_error_without_traceback(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_prints_every_step_for_every_minor() -> None:
    for minor in ("1.10", "1.14", "1.23"):
        proc = run("plan", "--knative-version", minor)
        assert proc.returncode == 0, proc.stderr
        for step in ("create-cluster", "serving-crds", "serving-core", "kourier"):
            assert step in proc.stdout


def test_cleanup_dry_run_lists_and_removes_nothing() -> None:
    """Only things with our name or label are listed; a dry run leaves them in place."""
    proc = run("cleanup", "--dry-run", "--cluster-prefix", "knative-drain-no-such-prefix")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("thing(s)")
    assert "kind cluster" not in proc.stdout
