"""``knative-drain verify BUNDLE``: is a certification bundle whole, unedited and a full run?

Each check reads only the bundle and the suite's own definition of itself (run/suite.py):

- files: every required file is there, and every file matches SHA256SUMS (none unlisted);
- results: each scenario's counts agree with its request records, the totals with the
  scenarios, the verdict with the outcomes, README.md's verdict line and JUnit with the
  report;
- the whole suite: nothing deselected, every case of the suite collected, and every skip
  one the suite itself gives on that platform and release;
- no reruns: no plugin that retries tests loaded, no test reported more than once;
- versions: the report, the session, the environment and PRODUCT.yaml name one release.

This is a consistency check, not a signature: SHA256SUMS catches a damaged or partly
edited bundle, and the cross-checks catch an edit that rewrote the sums too but not every
figure that depends on the one changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..matrix.cases import Case
from ..run import suite
from ..run.runner import outcome_of
from .bundle import REQUIRED, SUMS
from .compare import case_id
from .report import verdict_line, verdict_of

#: distributions that rerun or repeat tests: a gate must never retry a case
RERUN_PLUGINS = frozenset(
    {"pytest-rerunfailures", "flaky", "pytest-retry", "pytest-flakefinder", "pytest-repeat"}
)
_OK_STATUS = {101, 200}


@dataclass
class Verification:
    """What ``verify`` found: ``problems`` (each fails it) and ``notes`` (said, not failed)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cases: int = 0
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: Path) -> Verification:
    """Check the bundle directory, or its ``.tar.gz``, at ``path``."""
    if path.is_file() and path.name.endswith(".tar.gz"):
        with tempfile.TemporaryDirectory(prefix="knative-drain-verify-") as tmp:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")  # no path outside tmp, no devices
            except (tarfile.TarError, OSError, EOFError) as exc:
                why = str(exc).splitlines()[0]
                return Verification(problems=[f"{path}: not a readable .tar.gz ({why})"])
            roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(roots) != 1:
                return Verification(problems=[f"{path}: not one bundle directory inside"])
            return verify_dir(roots[0])
    if not path.is_dir():
        return Verification(problems=[f"{path}: no bundle directory or .tar.gz there"])
    return verify_dir(path)


def verify_dir(root: Path) -> Verification:
    out = Verification()
    _files(root, out)
    docs = {}
    for name in ("drain-report.json", "session.json", "environment.json"):
        try:
            docs[name] = json.loads((root / name).read_text())
        except (OSError, ValueError) as exc:
            out.problems.append(f"{name}: unreadable ({type(exc).__name__})")
    if len(docs) < 3:
        return out
    report, session, env = docs["drain-report.json"], docs["session.json"], docs["environment.json"]
    _results(report, out)
    _readme(root, report, out)
    _junit(root, session, out)
    _whole_suite(report, session, out)
    _no_reruns(session, out)
    _versions(root, report, session, env, out)
    return out


def _files(root: Path, out: Verification) -> None:
    for name in REQUIRED:
        if not (root / name).is_file():
            out.problems.append(f"{name}: missing")
    try:
        listed = dict(
            reversed(line.split("  ", 1)) for line in (root / SUMS).read_text().splitlines()
        )
    except (OSError, ValueError):
        out.problems.append(f"{SUMS}: missing or unreadable")
        return
    present = {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SUMS
    }
    out.files = len(present)
    for rel in sorted(set(listed) - present):
        if rel not in REQUIRED:  # a missing required file is said once, above
            out.problems.append(f"{rel}: listed in {SUMS} but missing")
    for rel in sorted(present - set(listed)):
        out.problems.append(f"{rel}: not listed in {SUMS}")
    for rel in sorted(present & set(listed)):
        if hashlib.sha256((root / rel).read_bytes()).hexdigest() != listed[rel]:
            out.problems.append(f"{rel}: checksum does not match {SUMS} (edited or damaged)")


def _results(report: dict[str, Any], out: Verification) -> None:
    scenarios = report.get("scenarios") or []
    classes: Counter[str] = Counter()
    requests = met = 0
    for s in scenarios:
        cid, summary, records = case_id(s), s.get("summary") or {}, s.get("records") or []
        counted = Counter(r.get("class") for r in records)
        planned = summary.get("planned", 0)
        checks = {
            "total": len(records),
            "ok": counted.get("ok", 0),
            "missing": planned - len(records),
            "failures": planned - counted.get("ok", 0),
        }
        for key, want in checks.items():
            if summary.get(key) != want:
                out.problems.append(
                    f"{cid}: summary {key} {summary.get(key)} but the records give {want}"
                )
        if dict(summary.get("classes") or {}) != dict(counted):
            out.problems.append(f"{cid}: summary classes disagree with the records' classes")
        strict = counted.get("ok", 0) / planned if planned else 1.0
        if not math.isclose(summary.get("strict_sli", -1), strict, abs_tol=1e-9):
            out.problems.append(
                f"{cid}: strict SLI {summary.get('strict_sli')} but the records give {strict:.4f}"
            )
        for r in records:
            if r.get("class") == "ok" and (
                r.get("error") is not None
                or r.get("body_ok") is False
                or r.get("status") not in _OK_STATUS
            ):
                out.problems.append(
                    f"{cid}: request {r.get('id')} is 'ok' but ended "
                    f"{r.get('status')} {r.get('error')!r}"
                )
                break
        met_now = bool(s.get("expectation_met"))
        want_outcome = outcome_of(s.get("known_failure") is not None, met_now)
        if s.get("outcome") != want_outcome:
            out.problems.append(
                f"{cid}: outcome {s.get('outcome')!r} but the expectation says {want_outcome!r}"
            )
        classes.update(counted)
        requests += planned
        met += met_now
    totals = report.get("totals") or {}
    wants = {"scenarios": len(scenarios), "requests": requests, "expectation_met": met}
    for key, want in wants.items():
        if totals.get(key) != want:
            out.problems.append(f"totals: {key} {totals.get(key)} but the scenarios give {want}")
    if (totals.get("classes") or {}) != dict(classes):
        out.problems.append("totals: classes disagree with the scenarios'")
    outcomes = {str(s.get("outcome")) for s in scenarios}
    verdict = verdict_of(outcomes, bool(report.get("infrastructure_errors")))
    if report.get("verdict") != verdict:
        out.problems.append(f"verdict {report.get('verdict')!r} but the outcomes give {verdict!r}")
    out.cases = len(scenarios)


def _readme(root: Path, report: dict[str, Any], out: Verification) -> None:
    try:
        text = (root / "README.md").read_text()
    except OSError:
        return
    if verdict_line(str(report.get("verdict")), report.get("totals") or {}) not in text:
        out.problems.append("README.md: its verdict line is not the report's")


def _junit(root: Path, session: dict[str, Any], out: Verification) -> None:
    try:
        tree = ET.parse(root / "junit.xml")
    except (OSError, ET.ParseError):
        out.problems.append("junit.xml: unreadable")
        return
    seen: dict[str, str] = {}
    for tc in tree.iter("testcase"):
        name = tc.get("name", "")
        kids = {child.tag for child in tc}
        state = next((k for k in ("failure", "error", "skipped") if k in kids), "passed")
        seen[name] = state
    for nodeid, test in (session.get("tests") or {}).items():
        name = nodeid.rsplit("::", 1)[-1]
        outcome = test.get("outcome")
        want = {"failed": "failure", "skipped": "skipped", "xfailed": "skipped"}.get(
            outcome, "passed"
        )
        got = seen.get(name)
        if got is None:
            out.problems.append(f"junit.xml: no testcase for {nodeid}")
        elif got != want and not (got == "error" and outcome == "failed"):
            out.problems.append(f"junit.xml: {name} is {got} but the session says {outcome}")


def _whole_suite(report: dict[str, Any], session: dict[str, Any], out: Verification) -> None:
    if session.get("deselected"):
        out.problems.append(
            f"partial run: {session['deselected']} test(s) deselected "
            f"(arguments: {' '.join(session.get('args') or [])})"
        )
    platform = report.get("platform", "")
    version = (report.get("knative") or {}).get("version", "")
    by_case: dict[str, dict[str, Any]] = {
        t["case"]: t for t in (session.get("tests") or {}).values() if t.get("case")
    }
    cases: list[Case] = suite.whole_suite(session.get("apps") or [])
    missing = [c.id for c in cases if c.id not in by_case]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        out.problems.append(
            f"partial run: {len(missing)} case(s) of the suite never collected "
            f"({', '.join(missing[:3])}{more})"
        )
    for c in cases:
        test = by_case.get(c.id)
        if test is None:
            continue
        reason = suite.skip_reason(c, platform, version)
        if test.get("outcome") == "skipped":
            if test.get("by_suite"):
                continue  # skipped while running by the suite's own rule (recorded then)
            if reason is None:
                why = test.get("skip_reason")
                out.problems.append(f"{c.id}: skipped ({why}), not by the suite")
            elif test.get("skip_reason") != reason:
                out.problems.append(f"{c.id}: skipped for a reason the suite does not give")
        elif reason is not None:
            out.problems.append(f"{c.id}: ran, but the suite skips it here ({reason})")


def _no_reruns(session: dict[str, Any], out: Verification) -> None:
    for dist in session.get("plugins") or []:
        if str(dist.get("name", "")).lower() in RERUN_PLUGINS:
            out.problems.append(f"plugin {dist['name']} was loaded: a gate never reruns a case")
    for nodeid, test in (session.get("tests") or {}).items():
        if test.get("reruns") or test.get("calls", 1) > 1:
            out.problems.append(f"{nodeid}: run more than once")


def _versions(
    root: Path,
    report: dict[str, Any],
    session: dict[str, Any],
    env: dict[str, Any],
    out: Verification,
) -> None:
    version = (report.get("knative") or {}).get("version")
    named = {
        "session.json": session.get("knative_version"),
        "environment.json": (env.get("knative") or {}).get("version"),
    }
    try:
        product = yaml.safe_load((root / "PRODUCT.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        product = {}
        out.problems.append("PRODUCT.yaml: unreadable")
    if isinstance(product, dict):
        named["PRODUCT.yaml"] = product.get("knative_version")
        if product.get("template"):
            out.notes.append("PRODUCT.yaml is the template: pass --product FILE to fill it")
    for where, value in named.items():
        if str(value) != str(version):
            out.problems.append(f"{where}: Knative {value}, the report {version}")
    tool = (report.get("tool") or {}).get("version")
    if session.get("tool_version") != tool:
        out.problems.append(f"session.json: tool {session.get('tool_version')}, the report {tool}")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
        out.problems.append(f"drain-report.json: Knative version {version!r} is not a release")
