"""The release x family table, made from committed kind reports (and compare between rows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pytest_knative_drain.evidence import release_table

ROOT = Path(__file__).resolve().parent.parent
R114 = ROOT / "evidence/2026-12-01-kind-1.14/kind/drain-report.json"
R118 = ROOT / "evidence/2026-12-01-kind-1.18/kind/drain-report.json"


def test_rows_go_by_release_with_each_family_and_compare_against_the_row_above() -> None:
    runs = release_table.load_runs([R118, R114])
    assert [r.version for r in runs] == ["1.14.2", "1.18.1"]
    text = release_table.render(runs)
    header, rule, first, second = text.splitlines()
    assert header.split(" | ")[3:9] == [
        "at once",
        "activator",
        "node_drain",
        "pod_delete",
        "rollout",
        "scale_down",
    ]
    assert "v1.31.14" in first and "kourier 1.21.0" in first
    # 1.14's pod-delete run: 6 good cases passed, 3 of 5 twins caught, two named as not met
    assert "good 6/6 pass · twins 3/5 caught" in first
    not_met = "pod-delete-long-short-timeout-go-shutdown, pod-kill-single-replica-go-shutdown"
    assert f"**NOT MET: {not_met}**" in first
    assert "vs 1.14.2:" in second and "not run" in second
    assert second.split(" | ")[4] == "-"  # 1.18's run had no activator case


def test_an_upstream_record_fills_its_release_column(tmp_path: Path) -> None:
    record = {
        "kind": "knative-drain-upstream",
        "knative_version": "1.18.1",
        "tests": [
            {"name": "TestDestroyPodInflight", "result": "PASS"},
            {"name": "TestDestroyPodWithRequests", "result": "FAIL"},
        ],
    }
    path = tmp_path / "upstream-1.18.1.json"
    path.write_text(json.dumps(record))
    ha = tmp_path / "ha" / "upstream-1.18.1.json"  # the HA package, run apart
    ha.parent.mkdir()
    ha.write_text(json.dumps({**record, "tests": [{"name": "TestActivatorHAGraceful",
                                                   "result": "PASS"}]}))  # fmt: skip
    runs = release_table.load_runs([R114, R118], [path, ha])
    assert release_table.upstream_cell(runs[1].upstream) == (
        "2/3 pass (failed: TestDestroyPodWithRequests)"
    )
    assert runs[0].upstream is None


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    for args in (["table", str(tmp_path / "none.json")], ["table", str(tmp_path / "x.json")],
                 ["table", str(R114), "--upstream", str(tmp_path / "x.json")]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "pytest_knative_drain.cli", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 2, args
        assert proc.stderr.startswith("knative-drain table: ") and "Traceback" not in proc.stderr


def test_a_substituted_patch_says_what_was_asked_and_why() -> None:
    """1.21 asked, 1.21.3's module refused by the mirror, 1.21.2 ran (platforms/release_patch)."""
    r121 = ROOT / "evidence/2026-12-06-kind-matrix/1.21/kind/drain-report.json"
    row = release_table.render(release_table.load_runs([r121, R118])).splitlines()[-1]
    assert row.startswith("| [1.21.2](")
    said = "(for 1.21: Knative 1.21.3: the module proxy refuses knative.dev/serving@v0.48.3; "
    assert said in row
    first = release_table.render(release_table.load_runs([R118])).splitlines()[-1]
    assert "(for " not in first.split(" | ")[0]  # a patch that ran as asked says nothing
