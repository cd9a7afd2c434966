"""The product end to end: the conformance suite on the local platform, through pytest.

Runs the two scenarios that matter most for knative/serving#15211 on all five
fixture apps with the real queue-proxy of Knative 1.14, plus the broken-config
twin (timeoutSeconds shorter than the requests) on the two drain-clean apps, then
reads the drain report: good apps drained with strict SLI 1.0, every negative
control caught by the right component, cluster-only cases skipped with the reason.
The cases run at once (about 2.5 minutes on 2 cores; one after another it took about
15): queue-proxy's 30 s quiet period is real.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conformance_cmd import conformance_cmd

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("pod-delete-long", "second-batch-during-termination")


@pytest.fixture(scope="module")
def report(conformance_run: Path) -> dict:
    return json.loads((conformance_run / "drain-report.json").read_text())


@pytest.fixture(scope="module")
def conformance_run(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    out = tmp_path_factory.mktemp("conformance")
    started = time.monotonic()
    proc = subprocess.run(
        conformance_cmd(
            "1.14",
            # internal-tls has its own module (test_internal_tls.py)
            f"({' or '.join(SCENARIOS)}) and not internal_tls",
            f"--drain-report={out / 'drain-report.json'}",
            "-rA",
            "-rs",
        ),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    took = time.monotonic() - started
    _show(pytestconfig, proc.stdout, took)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    return out


def _show(config: pytest.Config, stdout: str, took: float) -> None:
    """Put the run's verdict table (with each scenario's duration) in the CI log."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if "knative drain verdicts" in line), None)
    with capture.global_and_fixture_disabled():  # fixture output is captured otherwise
        reporter.write_line("")
        for line in lines[start : start + 14] if start is not None else lines[-20:]:
            reporter.write_line(line)
        reporter.write_line(f"conformance run (12 scenarios) took {took:.0f} s")


def _scenarios(report: dict, scenario: str, config: str = "default") -> dict[str, dict]:
    return {
        s["app"]: s
        for s in report["scenarios"]
        if s["scenario"] == scenario and s["config"]["name"] == config
    }


def test_report_accounts_for_every_run(report: dict) -> None:
    assert report["platform"] == "local"
    assert report["knative"]["version"].startswith("1.14.")
    assert report["verdict"] == "pass"
    assert len(report["scenarios"]) == 12
    for s in report["scenarios"]:
        assert s["summary"]["missing"] == 0
        assert s["summary"]["total"] == s["summary"]["planned"] > 0
        assert s["expectation_met"] is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_good_apps_drain_every_request(report: dict, scenario: str) -> None:
    runs = _scenarios(report, scenario)
    for app in ("python-gunicorn-exec", "go-shutdown"):
        s = runs[app]
        assert s["summary"]["strict_sli"] == 1.0, s["problems"]
        assert s["killed"] == []
        # the pod went away on its own, soon after the last request ended
        assert s["gone_after_s"] < s["timeout_seconds"] - 10


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("app", ["go-exit", "python-gunicorn-default-timeout"])
def test_apps_that_drop_requests_are_caught_as_queue_proxy_502(
    report: dict, scenario: str, app: str
) -> None:
    s = _scenarios(report, scenario)[app]
    assert s["verdict"] == "fail"
    assert s["summary"]["strict_sli"] < 1.0
    assert s["summary"]["signatures"].get("queue-proxy", 0) > 0
    bodies = {f["detail"] for f in s["failures"] if f["signature"] == "queue-proxy"}
    assert bodies & {"EOF", "unexpected EOF"} or any("connection" in b for b in bodies), bodies
    # the cut follows the app's SIGTERM (go-exit) or its graceful timeout (gunicorn)
    assert s["cut_after"], s


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shell_form_app_is_caught_by_sigkill(report: dict, scenario: str) -> None:
    s = _scenarios(report, scenario)["python-gunicorn-shell"]
    assert s["verdict"] == "fail"
    assert s["killed"] == ["user-container"]
    assert s["gone_after_s"] >= s["timeout_seconds"] - 1


def test_short_timeout_twin_is_caught_as_queue_proxy_504(report: dict) -> None:
    """timeoutSeconds at 60 % of the request length: every request ends in queue-proxy's
    504 "request timeout", and the pod's grace period (= timeoutSeconds) is 45 s."""
    runs = _scenarios(report, "pod-delete-long", "short-timeout")
    assert sorted(runs) == ["go-shutdown", "python-gunicorn-exec"]
    for s in runs.values():
        assert s["config"]["timeout_seconds"] == 45
        assert s["expected"] == "caught" and s["expectation_met"] is True
        assert s["summary"]["ok"] == 0
        assert {(f["signature"], f["detail"]) for f in s["failures"]} == {
            ("queue-proxy", "request timeout")
        }
        assert s["gone_after_s"] <= 45 + 5


def test_cluster_only_cases_are_skipped_with_the_reason(conformance_run: Path) -> None:
    log = (conformance_run / "pytest.log").read_text()
    assert "Knative config activator-in-path needs --platform=kind or existing" in log


def test_timeline_follows_kubelet(report: dict) -> None:
    s = _scenarios(report, "second-batch-during-termination")["go-shutdown"]
    at = {e["name"]: e["t_from_delete_s"] for e in s["events"]}
    assert at["SIGTERM queue-proxy"] < 1 and at["preStop started"] < 1
    # batch-2 arrives 5 s after the delete and restarts the 30 s quiet period
    assert 34 <= at["preStop returned"] <= 40
    assert at["SIGTERM user-container"] >= at["preStop returned"]


def test_each_finished_case_says_how_far_the_run_is(conformance_run: Path, report: dict) -> None:
    """run/progress.py: one line per case as it ends, however the pool orders them."""
    log = (conformance_run / "pytest.log").read_text()
    lines = [line for line in log.splitlines() if line.startswith("[knative-drain] ")]
    total = len(report["scenarios"])
    assert [int(line.split()[1].split("/")[0]) for line in lines] == list(range(1, total + 1))
    assert all(line.split()[1].endswith(f"/{total}") for line in lines)
    assert {line.split(": ", 1)[1].split(" ")[1] for line in lines} == {"met"}
    assert "running" in lines[0] and "running" not in lines[-1]  # cases at once, then none
