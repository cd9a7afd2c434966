"""``knative-drain compare`` on real drain reports of runs committed under evidence/."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pytest_knative_drain import cli
from pytest_knative_drain.evidence import compare

EVIDENCE = Path(__file__).resolve().parents[1] / "evidence"
REPLAY = EVIDENCE / "2026-12-01-local-replay"
R102 = REPLAY / "local-1.0.2" / "drain-report.json"  # before queue-proxy's drain bug
R170 = REPLAY / "local-1.7.0" / "drain-report.json"  # the bug (known Knative failure)
R1100 = REPLAY / "local-1.10.0" / "drain-report.json"  # the fix
KIND = EVIDENCE / "2026-12-01-kind-1.18" / "kind" / "drain-report.json"
KIND_123 = EVIDENCE / "2026-12-05-kind-1.23" / "kind" / "drain-report.json.gz"  # 16 MB raw


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["compare", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_release_that_breaks_a_good_app_is_a_regression_naming_the_known_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(capsys, str(R102), str(R170))
    assert code == 1 and err == ""
    rows = [line for line in out.splitlines() if "| regression |" in line]
    assert len(rows) == 4  # go-shutdown and gunicorn-exec on pod-delete-long and second-batch
    assert all("known Knative failure queue-proxy-exits-before-in-flight" in r for r in rows)
    assert "- gate: FAIL, 4 regression(s)" in out
    assert "Knative 1.0.2" in out and "Knative 1.7.0" in out


def test_the_fix_release_lists_what_was_fixed_and_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, str(R170), str(R1100))
    assert code == 0
    fixed = [line for line in out.splitlines() if "| fixed |" in line]
    assert {line.split(" | ")[0].lstrip("| ") for line in fixed} == {
        "pod-delete-long-go-shutdown",
        "pod-delete-long-python-gunicorn-exec",
        "second-batch-during-termination-go-shutdown",
        "second-batch-during-termination-python-gunicorn-exec",
    }
    assert all("was known Knative failure queue-proxy-exits-before-in-flight" in r for r in fixed)
    assert "| pod-delete-long-short-timeout-go-shutdown | changed |" in out  # 504s now, not EOF
    assert "- gate: pass" in out


def test_a_run_against_itself_is_all_unchanged() -> None:
    report = _load(R170)
    result = compare.compare(report, report)
    assert {r.status for r in result.rows} == {"unchanged"} and result.exit_code == 0
    assert len(result.rows) == len(report["scenarios"])


def test_a_negative_control_no_longer_caught_is_a_regression() -> None:
    old = _load(R170)
    new = copy.deepcopy(old)
    [case] = [
        s
        for s in new["scenarios"]
        if s["scenario"] == "pod-delete-long"
        and s["app"] == "go-exit"
        and s["config"]["name"] == "default"
    ]
    case.update(verdict="pass", expectation_met=False, outcome="FAIL")
    result = compare.compare(old, new)
    [row] = result.regressions
    assert row.case == "pod-delete-long-go-exit"
    assert row.why == "a negative control is no longer caught"
    assert result.exit_code == 1


def test_a_case_the_platform_failed_under_has_no_verdict() -> None:
    old = _load(R170)
    new = copy.deepcopy(old)
    new["scenarios"] = [
        s for s in new["scenarios"] if compare.case_id(s) != "pod-delete-short-go-exit"
    ]
    new["infrastructure_errors"] = [
        {"case": "pod-delete-short-go-exit", "error": "pause container exited | by someone"}
    ]
    result = compare.compare(old, new)
    [row] = [r for r in result.rows if r.status == "no verdict"]
    assert row.case == "pod-delete-short-go-exit"
    text = compare.render_markdown(result)
    assert "pause container exited \\| by someone" in text  # a pipe cannot break the table
    assert result.exit_code == 0


def test_the_summary_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    result = compare.compare(_load(R102), _load(R170))
    text = compare.render_markdown(result, limit_bytes=2500)
    assert len(text.encode()) <= 2500
    assert "more case(s) not listed" in text
    assert "| regression |" in text  # what matters most is kept first


def test_the_summary_file_gets_the_markdown_appended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    code, out, _ = _run(capsys, str(R170), str(R1100), "--summary", str(summary))
    assert code == 0
    assert summary.read_text() == "earlier step\n" + out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.json", "OLD {old}: no such file"),
        (lambda d: (d / "x.json").write_text("{not json") and d / "x.json", "not a drain report"),
        (lambda d: (d / "y.json").write_text('{"a": 1}') and d / "y.json", "not a drain report"),
        (lambda d: (d / "z.json.gz").write_text("{}") and d / "z.json.gz", "not a drain report"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    old = make(tmp_path)
    code, out, err = _run(capsys, str(old), str(R170))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message.format(old=old) in err


def test_a_gzipped_report_is_read_as_its_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, str(KIND), str(KIND_123))
    assert err == "" and code in (0, 1)
    assert "1.23.0" in out and "1.18" in out


def test_runs_of_different_platforms_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, str(KIND), str(R170))
    assert code == 2
    assert "OLD is a run on 'kind' and NEW on 'local'" in err
