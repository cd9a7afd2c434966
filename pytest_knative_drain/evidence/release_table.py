"""Many drain reports as one matrix: release x family, what ran and what each side caught.

Why: a maintainer gating releases reads one table, not fourteen reports. Each row is one
run (a release on its cluster): the Kubernetes and ingress that ran, per trigger family how
many good-app cases passed and how many broken twins were caught (with the known Knative
failures that marked good apps), the run's wall time, what :func:`compare.compare` says
against the row above (same platform and profile: regressions and fixes from one release
to the next), and Knative's own drain tests on the same cluster where they ran
(``knative-drain upstream`` records).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..matrix.scenarios import SCENARIOS
from .compare import CaseResult, CompareError, _result, compare, load_report, read_json

UPSTREAM_KIND = "knative-drain-upstream"


@dataclass
class Run:
    """One drain report, and Knative's own tests on the same cluster if they ran."""

    path: Path
    report: dict[str, Any]
    upstream: dict[str, Any] | None = None
    results: list[CaseResult] = field(default_factory=list)

    @property
    def version(self) -> str:
        return str((self.report.get("knative") or {}).get("version", "?"))

    def sort_key(self) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in self.version.split("."))
        except ValueError:
            return (9999,)


def load_upstream(path: str | Path) -> dict[str, Any]:
    """A ``knative-drain upstream`` record, or CompareError in one line."""
    data = read_json(path, "--upstream", "an upstream record")
    if not isinstance(data, dict) or data.get("kind") != UPSTREAM_KIND:
        raise CompareError(f"--upstream {path}: not a `knative-drain upstream` record")
    return data


def load_runs(reports: list[str | Path], upstream: list[str | Path] = ()) -> list[Run]:
    """Reports sorted by Knative version, each with the upstream record of its version."""
    records = [load_upstream(u) for u in upstream]
    runs = []
    for path in reports:
        report = load_report(path, "REPORT")
        run = Run(Path(path), report, results=[_result(s) for s in report["scenarios"]])
        mine = [r for r in records if r.get("knative_version") == run.version]
        if mine:  # one release's packages may have run apart (e2e, then ha): one cell
            run.upstream = {**mine[0], "tests": [t for r in mine for t in r.get("tests") or []]}
        runs.append(run)
    return sorted(runs, key=Run.sort_key)


def family_of(scenario: str) -> str:
    """The conformance family (test_<family>.py) of a scenario name."""
    known = SCENARIOS.get(scenario)
    return known.family if known is not None else "other"


def family_cells(run: Run) -> dict[str, str]:
    """family -> "good 4/4 · twins 3/3 caught" (plus the known failures that marked good apps)."""
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for scenario, result in zip(run.report["scenarios"], run.results, strict=True):
        groups[family_of(scenario["scenario"])].append(result)
    cells = {}
    for family, results in groups.items():
        good = [r for r in results if r.expected == "pass"]
        twins = [r for r in results if r.expected != "pass"]
        parts = []
        if good:
            parts.append(f"good {sum(r.verdict == 'pass' for r in good)}/{len(good)} pass")
        if twins:
            parts.append(f"twins {sum(r.expectation_met for r in twins)}/{len(twins)} caught")
        known = sorted({r.known for r in good if r.known and r.verdict != "pass"})
        if known:
            parts.append("known: " + ", ".join(known))
        unmet = [r.case for r in results if not r.expectation_met and not r.known]
        if unmet:
            parts.append("**NOT MET: " + ", ".join(unmet) + "**")
        cells[family] = " · ".join(parts)
    return cells


def at_once(report: dict[str, Any]) -> str:
    """Cases at once, and the schedulable nodes where the report read them."""
    environment = report.get("environment") or {}
    cases = str(environment.get("drain_concurrency", "-")).split(" ")[0]
    nodes = (environment.get("cluster_capacity") or {}).get("schedulable_nodes")
    return f"{cases} ({nodes} node{'s' if nodes != 1 else ''})" if nodes else cases


def wall_minutes(report: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(report["started"])
        end = datetime.fromisoformat(report["finished"])
    except (KeyError, TypeError, ValueError):
        return "-"
    return f"{(end - start).total_seconds() / 60:.1f} min"


def against_previous(prev: Run | None, run: Run) -> str:
    if prev is None:
        return "-"
    try:
        cmp = compare(prev.report, run.report)
    except CompareError as exc:
        return f"not comparable ({exc})"
    counts = {s: cmp.count(s) for s in ("regression", "fixed", "changed")}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "same verdicts"
    return f"vs {prev.version}: {said}"


def upstream_cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not run"
    tests = record.get("tests") or []
    passed = sum(t.get("result") == "PASS" for t in tests)
    failed = [t["name"] for t in tests if t.get("result") not in ("PASS", "SKIP")]
    cell = f"{passed}/{len(tests)} pass"
    return cell + (f" (failed: {', '.join(failed)})" if failed else "")


def render(runs: list[Run]) -> str:
    """The matrix as a markdown table, one row per run."""
    families = sorted({f for run in runs for f in family_cells(run)})
    head = ["Knative", "Kubernetes", "ingress", "at once", *families, "wall", "compare"]
    head.append("Knative's tests")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    prev: Run | None = None
    for run in runs:
        cells = family_cells(run)
        kube = run.report.get("kubernetes") or {}
        knative = run.report.get("knative") or {}
        why = knative.get("substituted")  # a minor asked, a served patch built (release_patch)
        asked = f" (for {knative.get('requested_version')}: {why})" if why else ""
        row = [
            f"[{run.version}]({run.path.as_posix()}){asked}".replace("|", "\\|"),
            str(kube.get("version", "-")),
            str(run.report.get("ingress", "-")).replace("|", "\\|"),
            at_once(run.report),
            *(cells.get(f, "-") for f in families),
            wall_minutes(run.report),
            against_previous(prev, run),
            upstream_cell(run.upstream),
        ]
        lines.append("| " + " | ".join(row) + " |")
        prev = run
    return "\n".join(lines) + "\n"
