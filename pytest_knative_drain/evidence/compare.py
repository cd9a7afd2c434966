"""Two drain reports side by side: what regressed, what was fixed, what stayed the same.

A gate for versions has to say what changed between two runs (two releases, or one release
before and after a change). A case is one scenario x Knative config x app, keyed as the
suite names it (``pod-delete-long-short-timeout-go-shutdown``).

- **regression**: a good app passed in OLD and fails in NEW, even when a known Knative
  failure explains it (the record is named beside it: knowing a bug does not make the
  release drop fewer requests); or a case met its expectation in OLD and not in NEW (a
  negative control no longer caught: the gate lost its teeth there).
- **fixed**: the other way round.
- **changed**: same outcome, other figures (SLIs, failure classes, signatures).
- **no verdict**: the platform failed under the case in NEW (an infrastructure error).

Plain data in, markdown out, for a CI job summary: the table is bounded (GitHub's step
summary takes 1 MiB), unchanged cases are left out first.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOL = "pytest-knative-drain"
#: GitHub's job summary limit is 1 MiB; stay under it with room for the job's own lines
SUMMARY_LIMIT_BYTES = 1_000_000
ORDER = ("regression", "no verdict", "fixed", "only in OLD", "only in NEW", "changed", "unchanged")


class CompareError(ValueError):
    """Input that cannot be compared (a missing file, not a drain report, other platforms)."""


@dataclass(frozen=True)
class CaseResult:
    """What one report says of one case."""

    case: str
    verdict: str  # pass / fail
    expected: str  # pass / caught
    expectation_met: bool
    outcome: str  # ok / known / FAIL
    strict: float | None
    upstream: float | None  # the upstream-equivalent SLI
    classes: dict[str, int]
    signatures: dict[str, int]
    known: str | None  # the known Knative failure record's id, if one marked the case

    @property
    def good_app_passed(self) -> bool:
        return self.expected == "pass" and self.verdict == "pass"

    @property
    def good_app_failed(self) -> bool:
        return self.expected == "pass" and self.verdict != "pass"

    def cell(self) -> str:
        sli = "/".join("-" if v is None else f"{v:.3f}" for v in (self.strict, self.upstream))
        sigs = ",".join(f"{k}={v}" for k, v in sorted(self.signatures.items())) or "-"
        failed = {k: v for k, v in self.classes.items() if k != "ok"}
        if failed:
            sigs = ",".join(f"{k}={v}" for k, v in sorted(failed.items())) + " " + sigs
        known = f" KNOWN {self.known}" if self.known else ""
        met = "" if self.expectation_met else " (expectation NOT met)"
        return f"{self.verdict} {sli} {sigs}{known}{met}"


@dataclass(frozen=True)
class Row:
    case: str
    status: str
    old: CaseResult | None
    new: CaseResult | None
    why: str = ""


@dataclass
class Comparison:
    old_label: str
    new_label: str
    rows: list[Row] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.status == "regression"]

    @property
    def exit_code(self) -> int:
        """1 when anything regressed, else 0."""
        return 1 if self.regressions else 0


def case_id(scenario: dict[str, Any]) -> str:
    """The suite's own case id (matrix/cases.py): the default config is left out."""
    config = (scenario.get("config") or {}).get("name", "default")
    parts = [scenario["scenario"], *([] if config == "default" else [config]), scenario["app"]]
    return "-".join(parts)


def read_json(path: str | Path, role: str, what: str) -> Any:
    """``path``'s JSON, or CompareError in one line naming ``role`` and ``what`` it must be.

    A ``.gz`` path is read through gzip: a whole release's report is 16 MB of records, and
    evidence/ keeps it compressed."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        return json.loads(gzip.decompress(raw) if p.suffix == ".gz" else raw)
    except FileNotFoundError:
        raise CompareError(f"{role} {p}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{role} {p}: not {what} ({type(exc).__name__}: {exc})") from None


def load_report(path: str | Path, role: str) -> dict[str, Any]:
    """A drain report's JSON, or CompareError in one line naming ``role`` (OLD or NEW)."""
    p = Path(path)
    data = read_json(p, role, "a drain report")
    tool = data.get("tool") if isinstance(data, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("name") != TOOL
        or not isinstance(data.get("scenarios"), list)
    ):
        raise CompareError(
            f"{role} {p}: not a drain report (no tool.name {TOOL!r} and scenarios list; "
            "write one with --drain-report PATH)"
        )
    return data


def _result(scenario: dict[str, Any]) -> CaseResult:
    known = scenario.get("known_failure")
    return CaseResult(
        case=case_id(scenario),
        verdict=str(scenario.get("verdict")),
        expected=str(scenario.get("expected")),
        expectation_met=bool(scenario.get("expectation_met")),
        outcome=str(scenario.get("outcome")),
        strict=(scenario.get("sli") or {}).get("strict"),
        upstream=(scenario.get("sli") or {}).get("upstream"),
        classes=dict((scenario.get("counts") or {}).get("classes") or {}),
        signatures=dict((scenario.get("counts") or {}).get("signatures") or {}),
        known=known.get("id") if isinstance(known, dict) else known,
    )


def _label(report: dict[str, Any], path: str) -> str:
    knative = (report.get("knative") or {}).get("version", "?")
    kubernetes = (report.get("kubernetes") or {}).get("version")
    on = f", Kubernetes {kubernetes}" if kubernetes else ""
    return f"{path} ({report.get('platform')}, Knative {knative}{on})"


def compare(
    old: dict[str, Any], new: dict[str, Any], old_name: str = "OLD", new_name: str = "NEW"
) -> Comparison:
    """Every case of either report, with its status (see the module docstring)."""
    if old.get("platform") != new.get("platform"):
        raise CompareError(
            f"OLD is a run on {old.get('platform')!r} and NEW on {new.get('platform')!r}: "
            "compare runs of one platform"
        )
    if old.get("profile") != new.get("profile"):
        raise CompareError(
            f"OLD ran the {old.get('profile')!r} profile and NEW {new.get('profile')!r}: "
            "their load shapes differ"
        )
    before = {r.case: r for r in map(_result, old["scenarios"])}
    after = {r.case: r for r in map(_result, new["scenarios"])}
    broken = {e.get("case"): e.get("error", "") for e in new.get("infrastructure_errors") or []}
    out = Comparison(_label(old, old_name), _label(new, new_name))
    cases = set(before) | set(after) | {c for c in broken if c in before}
    for case in sorted(cases):
        o, n = before.get(case), after.get(case)
        out.rows.append(_row(case, o, n, broken.get(case)))
    return out


def _row(case: str, o: CaseResult | None, n: CaseResult | None, error: str | None) -> Row:
    if n is None:
        if error is not None:
            return Row(case, "no verdict", o, None, f"infrastructure error: {error}")
        return Row(case, "only in OLD", o, None, "not run in NEW")
    if o is None:
        return Row(case, "only in NEW", None, n)
    if o.good_app_passed and n.good_app_failed:
        why = "a good app passed and now fails"
        if n.known:
            why += f"; known Knative failure {n.known}"
        return Row(case, "regression", o, n, why)
    if o.expectation_met and not n.expectation_met:
        what = "a negative control is no longer caught" if n.expected == "caught" else ""
        return Row(case, "regression", o, n, what or "the expectation is no longer met")
    if (o.good_app_failed and n.good_app_passed) or (not o.expectation_met and n.expectation_met):
        why = "a good app failed and now passes" if o.good_app_failed else "expectation met again"
        if o.known:
            why += f" (was known Knative failure {o.known})"
        return Row(case, "fixed", o, n, why)
    figures = ("verdict", "strict", "upstream", "classes", "signatures", "outcome")
    if any(getattr(o, f) != getattr(n, f) for f in figures):
        return Row(case, "changed", o, n)
    return Row(case, "unchanged", o, n)


def render_markdown(cmp: Comparison, limit_bytes: int = SUMMARY_LIMIT_BYTES) -> str:
    """A markdown summary: counts, then one table row per case, most important first."""
    counts = ", ".join(f"{cmp.count(s)} {s}" for s in ORDER if cmp.count(s))
    head = [
        "## knative-drain compare",
        "",
        f"- OLD: {cmp.old_label}",
        f"- NEW: {cmp.new_label}",
        f"- {counts or 'no cases'}",
        f"- gate: {f'FAIL, {len(cmp.regressions)} regression(s)' if cmp.exit_code else 'pass'}",
        "",
        "OLD and NEW: verdict, strict/upstream-equivalent SLI, failure classes and who cut them.",
        "",
        "| case | status | OLD | NEW | why |",
        "|---|---|---|---|---|",
    ]
    rows = sorted(cmp.rows, key=lambda r: (ORDER.index(r.status), r.case))
    text = "\n".join(head) + "\n"
    left_out = 0
    for i, r in enumerate(rows):
        cells = [r.case, r.status, r.old.cell() if r.old else "-", r.new.cell() if r.new else "-"]
        cells.append(" ".join((r.why or "-").split()))  # one table row: no line breaks
        line = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"
        if len((text + line).encode()) > limit_bytes - 200:
            left_out = len(rows) - i
            break
        text += line
    if left_out:
        text += f"\n{left_out} more case(s) not listed (the summary is bounded: {limit_bytes} B)\n"
    return text
