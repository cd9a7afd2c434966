"""The drain report (JSON, markdown, terminal rows) and the timeline, from real records.

Records come from the real load engine against real loopback servers
(tests/misbehaving_servers.py): a good server and one answering queue-proxy's 502 "EOF".
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from misbehaving_servers import LoopbackServer

from pytest_knative_drain import load
from pytest_knative_drain.evidence.allure import requests_document
from pytest_knative_drain.evidence.report import DrainReport
from pytest_knative_drain.evidence.timeline import render_timeline, timeline_data
from pytest_knative_drain.knative import catalog
from pytest_knative_drain.matrix.scenarios import SCENARIOS
from pytest_knative_drain.options import DrainOptions
from pytest_knative_drain.platforms.pod import PodEvent
from pytest_knative_drain.run import verdict
from pytest_knative_drain.run.runner import ScenarioResult, judge_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(
    app: str,
    failing: str | None = None,
    *,
    n: int = 8,
    scenario: str = "pod-delete-long",
    expected: Iterable[str] = (),
    logs: dict[str, str] | None = None,
) -> ScenarioResult:
    """A scenario result from real requests: ``n`` good ones, then ``n`` to a misbehaving server.

    Pod events are stamped on the same monotonic clock around the real requests, so the
    timeline and the "cut after" attribution see a real ordering.
    """
    pod = f"{app}-00001-deployment-abc12"

    def event(name: str, detail: str = "") -> PodEvent:
        return PodEvent(pod, name, time.monotonic(), time.time(), detail)

    events = [event("delete", "terminationGracePeriodSeconds=120"), event("SIGTERM queue-proxy")]
    t0 = events[0].mono
    with LoopbackServer("ok", pod=pod) as ok:
        records = load.run_batch(ok.url + "?sleep=150", n, expect_body="slept").records
    events += [event("preStop returned", "status 200"), event("SIGTERM user-container")]
    if failing:
        with LoopbackServer(failing, pod=pod) as bad:
            records += load.run_batch(bad.url + "?sleep=50", n, expect_body="slept").records
    events += [event("user-container exited", "exit code 0"), event("gone")]
    for i, record in enumerate(records):
        record.id = i
    plan = SCENARIOS[scenario].plan("quick")
    result = ScenarioResult(
        scenario=scenario,
        app=app,
        profile="quick",
        plan=plan,
        records=records,
        summary=verdict.summarize(records, planned=len(records)),
        events=events,
        t0_mono=t0,
        gone_after_s=events[-1].mono - t0,
        killed=[],
        expected=frozenset(expected),
        duration_s=events[-1].mono - t0 + 0.25,
        logs=dict(logs or {}),
    )
    judge_result(result)
    return result


def options(platform: str = "local") -> DrainOptions:
    return DrainOptions(
        release=catalog.resolve("1.14"),
        platform=platform,
        profile="quick",
        kubeconfig=None,
        context=None,
        keep=False,
        app_image=None,
        drain_report=None,
    )


def test_report_json_has_counts_slis_verdict_and_timeline(tmp_path: Path) -> None:
    report = DrainReport(options())
    report.add(make_result("python-gunicorn-exec"))
    report.add(make_result("go-exit", "bad_gateway", expected={"queue-proxy"}))
    json_path, md_path = report.write(tmp_path / "r.json")
    data = json.loads(json_path.read_text())
    assert data["verdict"] == "pass"  # the negative control was caught
    assert data["kubernetes"] == {"version": None, "kind_version": None, "node_image": None}
    assert data["ingress"] == "none" and data["platform"] == "local"
    assert data["totals"]["classes"] == {"ok": 16, "http_5xx": 8}
    assert data["totals"]["signatures"] == {"queue-proxy": 8}
    good, control = data["scenarios"]
    assert good["counts"] == {"classes": {"ok": 8}, "signatures": {}}
    assert good["sli"] == {"strict": 1.0, "upstream": 1.0} and good["verdict"] == "pass"
    assert control["counts"] == {
        "classes": {"ok": 8, "http_5xx": 8},
        "signatures": {"queue-proxy": 8},
    }
    assert control["sli"]["strict"] == 0.5 and control["verdict"] == "fail"
    assert control["expected"] == "caught" and control["expectation_met"] is True
    assert control["trigger"]["name"] == "pod-delete" and control["tolerance"] == 1.0
    assert control["config"]["timeout_seconds"] == 120
    assert control["config"]["name"] == "default"
    names = [e["name"] for e in control["events"]]
    assert names[0] == "delete" and names[-1] == "gone"
    assert control["events"][0]["t_from_delete_s"] == 0.0
    assert control["cut_after"] == {
        next(k for k in control["cut_after"] if k.startswith("SIGTERM user-container")): 8
    }
    md = md_path.read_text()
    assert "| Knative Serving | 1.14.2 (knative-v1.14.2) |" in md
    assert "| Kubernetes | none (no cluster) |" in md
    assert "| go-exit | 8/16 | ok 8, http_5xx 8 | queue-proxy 8 | 0.5000 | 0.5000 |" in md
    assert "Verdict: **PASS** (2 of 2 scenarios met their expectation; 24 requests)" in md
    assert "`EOF`" in md  # the failure table of the failed scenario


def test_markdown_marks_an_app_that_should_have_passed(tmp_path: Path) -> None:
    report = DrainReport(options())
    report.add(make_result("go-shutdown", "reset", n=4))
    md = report.to_markdown()
    assert report.verdict == "fail" and "Verdict: **FAIL**" in md
    assert "| reset | unknown |" in md and "**FAIL** |" in md


def test_terminal_rows_show_how_long_each_scenario_took() -> None:
    report = DrainReport(options())
    result = make_result("python-gunicorn-exec", n=3)
    result.duration_s = 75.68
    report.add(result)
    head, row = report.table_lines()
    assert "took s" in head
    assert "75.7" in row and "3/3" in row and row.rstrip().endswith("-")


def test_timeline_png_from_result_and_from_the_requests_file(tmp_path: Path) -> None:
    result = make_result("go-exit", "bad_gateway", n=6, expected={"queue-proxy"})
    data = timeline_data(result)
    assert sorted(cls for *_, cls, _ in data["lines"]) == ["http_5xx"] * 6 + ["ok"] * 6
    assert [m[1] for m in data["marks"]] == [
        "delete",
        "preStop returned",
        "SIGTERM user-container",
        "gone",
    ]
    # every 5xx line starts after SIGTERM user-container, every ok line ends before it
    sigterm = data["marks"][2][0]
    assert all(s >= sigterm for s, _, cls, _ in data["lines"] if cls == "http_5xx")
    assert all(e <= sigterm for _, e, cls, _ in data["lines"] if cls == "ok")
    a = render_timeline(result, tmp_path / "a.png")
    doc = json.loads(json.dumps(requests_document(result)))  # as read back from allure
    b = render_timeline(doc, tmp_path / "b.png")
    for png in (a, b):
        raw = png.read_bytes()
        assert raw[:8] == PNG_MAGIC and len(raw) > 10_000
    assert timeline_data(doc)["lines"] == data["lines"]


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    report = DrainReport(options())
    report.add(make_result("python-gunicorn-exec", n=2))
    path = tmp_path / "r.json"
    report.write(path)
    first = json.loads(path.read_text())
    report.add(make_result("go-shutdown", n=2))
    report.write(path)  # replaces the whole file: readers see the old report or the new one
    assert len(json.loads(path.read_text())["scenarios"]) == len(first["scenarios"]) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]
    # a write that fails at the rename leaves what was there, and no temp file
    blocked = tmp_path / "blocked.json"
    blocked.mkdir()
    with pytest.raises(IsADirectoryError):
        report.write(blocked)
    assert blocked.is_dir() and not list(blocked.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_falls_back_to_the_temp_dir_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's directory became a file during the run: the JSON lands in the temp dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "out").write_text("was a directory when the run started\n")
    report = DrainReport(options())
    report.environment["run_id"] = "run-0123abcd"
    report.add(make_result("python-gunicorn-exec", n=2))
    lines = report.save(tmp_path / "out" / "run.json")
    assert len(lines) == 2, lines  # JSON and markdown, one line each
    json_line, md_line = lines
    assert json_line.startswith(f"drain report: cannot write {tmp_path / 'out' / 'run.json'} (")
    assert "FileExistsError" in json_line  # mkdir: "out" is there, as a file
    fallback = Path(json_line.rsplit("written to ", 1)[1].removesuffix(" instead"))
    assert fallback.parent == tmp_path / "system-tmp"
    assert fallback.name.startswith("knative-drain-report-") and "run-0123abcd" in fallback.name
    assert json.loads(fallback.read_text())["scenarios"][0]["app"] == "python-gunicorn-exec"
    assert fallback.with_suffix(".md").read_text().startswith("# Knative drain")
    assert md_line.endswith(f"written to {fallback.with_suffix('.md')} instead")


def test_save_never_raises_even_when_nothing_can_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "file" / "tmp"))
    report = DrainReport(options())
    lines = report.save(tmp_path / "file" / "run.json")
    assert [line.split(":", 1)[0] for line in lines] == ["drain report LOST"] * 2
    assert all("\n" not in line and "nor " in line for line in lines)


def test_a_kind_report_names_what_ran_never_the_catalog_pins() -> None:
    """The 2026-12-01 kind report named kindest/node:v1.28.7 (the catalog's pin) and Kourier
    1.14.0 where a node image of v1.31.14 and Kourier 1.21.0 built here ran."""
    report = DrainReport(options("kind"))
    built = "knative-drain/kind-node:v1.34.12"
    report.environment.update(
        kind_node_image=built,
        kubernetes_version="v1.34.12",
        kind_version="v0.30.0",
        ingress="kourier 1.21.0 (envoy 1.36.4) (serving 1.14.2)",
    )
    data = report.to_dict()
    assert data["kubernetes"] == {
        "version": "v1.34.12",
        "kind_version": "v0.30.0",
        "node_image": built,
    }
    assert data["ingress"].startswith("kourier 1.21.0")
    knative = data["knative"]
    assert "kourier_version" not in knative and "kind_node_image" not in knative
    assert "manifests" not in knative  # the 1.14 kind report listed kourier.yaml v1.14.0's URL
    assert knative["catalog_pins"]["kourier_version"] == "1.14.0"  # kept, but as a pin
    assert knative["catalog_pins"]["manifests"]["kourier.yaml"].endswith("v1.14.0/kourier.yaml")
    assert f"| node image | {built} |" in report.to_markdown(data)
