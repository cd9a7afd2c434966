"""The run record: one JSON document for the whole run, plus a markdown rendering.

Like pytest-benchmark's run record, it carries machine and commit info so a
result can be traced to where and on what it was measured.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..knative import catalog

if TYPE_CHECKING:
    from ..options import DrainOptions
    from ..run.runner import ScenarioResult


def machine_info() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def commit_info(cwd: Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout the run came from, if any."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    return {"id": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


class DrainReport:
    """Collects scenario results during a run; writes JSON and markdown at the end."""

    def __init__(self, options: DrainOptions) -> None:
        self.options = options
        self.results: list[ScenarioResult] = []
        self.errors: list[dict[str, str]] = []  # cases the platform failed under: no verdict
        self.environment: dict[str, Any] = {}  # platform facts: versions, ingress, images
        self.started = dt.datetime.now(dt.timezone.utc)

    def add(self, result: ScenarioResult) -> None:
        self.results.append(result)

    def add_error(self, case: str, message: str) -> None:
        """A case that ended in an infrastructure error: it has no verdict."""
        self.errors.append({"case": case, "error": message})

    def facts(self) -> dict[str, Any]:
        """Platform facts with explicit "unknown" values (None / 'none'), never missing keys."""
        env = self.environment
        release = self.options.release
        return {
            "platform": self.options.platform,
            # what the platform runs (an existing cluster: its own), else what was asked for
            "knative_version": env.get("knative_version") or release.version,
            "kubernetes_version": env.get("kubernetes_version"),  # None on --platform=local
            "kind_version": env.get("kind_version"),
            "kind_node_image": env.get("kind_node_image")
            or (release.kind_node_image if self.options.platform == "kind" else None),
            "ingress": env.get("ingress") or "none",
            "profile": self.options.profile,
        }

    def to_dict(self) -> dict[str, Any]:
        facts = self.facts()
        return {
            "tool": {"name": "pytest-knative-drain", "version": __version__},
            "started": self.started.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
            "platform": self.options.platform,
            "knative": self.knative(facts["knative_version"]),
            "kubernetes": {
                "version": facts["kubernetes_version"],
                "kind_version": facts["kind_version"],
                "node_image": facts["kind_node_image"],
            },
            "ingress": facts["ingress"],
            "profile": self.options.profile,
            "environment": self.environment,
            "machine": machine_info(),
            "commit": commit_info(),  # the checkout pytest ran in (the suite)
            "tool_commit": commit_info(Path(__file__).resolve().parent),
            "verdict": self.verdict,
            "totals": self.totals(),
            "scenarios": [scenario_dict(r) for r in self.results],
            "infrastructure_errors": self.errors,
        }

    def knative(self, version: str) -> dict[str, Any]:
        """The Knative release the run measured, as the catalog knows it.

        ``--platform=existing`` measures the cluster's own version, which may not be the
        requested (or default) one: the record names the measured one, with the request
        beside it when the user asked for another.
        """
        release = self.options.release
        if version == release.version:
            built = _pins_apart(release.to_dict())
            if self.options.release_substituted:  # a minor asked, a served patch built
                built["requested_version"] = self.options.knative_version_requested
                built["substituted"] = self.options.release_substituted
            return built
        try:
            measured: dict[str, Any] = _pins_apart(catalog.resolve(version).to_dict())
        except catalog.CatalogError:
            measured = {"version": version, "in_catalog": False}
        measured["source"] = self.environment.get("knative_version_source")
        requested = self.environment.get("requested_knative_version")
        if requested:
            measured["requested_version"] = requested
        return measured

    @property
    def verdict(self) -> str:
        """pass when every scenario met its expectation (negative controls caught);
        incomplete when none failed but the platform failed under some case;
        known-knative-failures when the only misses are recorded Knative bugs."""
        return verdict_of({r.outcome for r in self.results}, bool(self.errors))

    def totals(self) -> dict[str, Any]:
        """Counts per class and signature over every scenario of the run."""
        classes: Counter[str] = Counter()
        signatures: Counter[str] = Counter()
        for r in self.results:
            classes.update(r.summary.classes)
            signatures.update(r.summary.signatures)
        return {
            "scenarios": len(self.results),
            "expectation_met": sum(r.expectation_met for r in self.results),
            "known_knative_failures": sum(r.outcome == "known" for r in self.results),
            "requests": sum(r.summary.planned for r in self.results),
            "classes": dict(classes),
            "signatures": dict(signatures),
        }

    def table_lines(self) -> list[str]:
        """The terminal summary: one row per scenario, with how long it took."""
        head = (
            f"{'scenario':32} {'app':31} {'ok/total':>9} {'strict':>6} {'upstrm':>6} "
            f"{'gone s':>6} {'took s':>6} {'expect':>6} {'result':>6}  failures"
        )
        lines = [head]
        for r in self.results:
            s = r.summary
            gone = f"{r.gone_after_s:.1f}" if r.gone_after_s is not None else "-"
            lines.append(
                f"{r.label:32} {r.app:31} {s.ok:>4}/{s.planned:<4} {s.strict_sli:>6.3f} "
                f"{s.upstream_sli:>6.3f} {gone:>6} {r.duration_s:>6.1f} {r.expected_label:>6} "
                f"{_OUTCOME_SHORT[r.outcome]:>6}  {_failures_short(r) or '-'}"
            )
        lines += [f"{e['case']:64} {'ERROR':>52}  {e['error']}" for e in self.errors]
        return lines

    def to_markdown(self, data: dict[str, Any] | None = None) -> str:
        """A rendering fit for a certification submission: product table, then scenarios.

        ``data`` is this report's ``to_dict()`` when the caller has it (one "finished" time).
        """
        data = data if data is not None else self.to_dict()
        k, kube, commit = data["knative"], data["kubernetes"], data["commit"]
        if not commit["id"]:  # run outside a checkout: name the tool's own commit
            commit = data["tool_commit"]
        totals = data["totals"]
        rows = [
            "# Knative drain conformance report",
            "",
            verdict_line(data["verdict"], totals),
            "",
            "## Product",
            "",
            "| item | value |",
            "|---|---|",
            f"| Knative Serving | {k['version']} ({k.get('tag', '-')}) |",
            *(
                [f"| requested Knative version | {k['requested_version']} |"]
                if k.get("requested_version")
                else []
            ),
            *([f"| patch substituted | {k['substituted']} |"] if k.get("substituted") else []),
            f"| Kubernetes | {kube['version'] or 'none (no cluster)'} |",
            f"| platform | {data['platform']} |",
            f"| ingress | {data['ingress']} |",
            f"| kind | {kube['kind_version'] or '-'} |",
            f"| node image | {kube['node_image'] or '-'} |",
            f"| profile | {data['profile']} |",
            f"| tool | pytest-knative-drain {__version__} |",
            f"| commit | {commit['id'] or '-'}{' (dirty)' if commit.get('dirty') else ''} |",
            f"| run | {data['started']} to {data['finished']} |",
            "",
            "## Scenarios",
            "",
            "Strict SLI counts every failed or missing request; the upstream SLI excludes "
            "transport errors that Knative's own test client retries (knative/pkg test/spoof).",
            "Negative controls (expected `caught`) are apps that mishandle SIGTERM: the run "
            "passes only if the gate catches them.",
            "",
            "| scenario | app | requests ok | classes | signatures | strict SLI "
            "| upstream SLI | tolerance | pod gone (s) | took (s) | expected | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            s = r.summary
            gone = f"{r.gone_after_s:.1f}" if r.gone_after_s is not None else "-"
            rows.append(
                f"| {r.label} | {r.app} | {s.ok}/{s.planned} | {_counts(s.classes)} | "
                f"{_counts(s.signatures)} | {s.strict_sli:.4f} | {s.upstream_sli:.4f} | "
                f"{r.plan.min_strict_sli:g} | {gone} | {r.duration_s:.1f} | "
                f"{r.expected_label} | {_OUTCOME_MD[r.outcome]} |"
            )
        restarts = [r for r in self.results if r.restart is not None]
        if restarts:
            rows += ["", "Container restarts (s from the restart):", ""]
            rows += [f"- {r.label} / {r.app}: {r.restart.line()}" for r in restarts if r.restart]
        for r in self.results:
            if r.passed and r.expectation_met:
                continue
            rows += ["", f"### {r.label} / {r.app}", ""]
            rows += [f"- {p}" for p in r.problems] or ["- no problem found"]
            if r.known_failure is not None:
                k = r.known_failure
                rows.append(
                    f"- known Knative failure `{k['id']}` ({', '.join(k['issues'])}; fixed by "
                    f"{k['fix']} in {', '.join(k['fixed_in'])})"
                    + ("" if r.outcome == "known" else ": it did NOT happen, the record is wrong")
                )
            table = r.to_dict()
            if table["failures"]:
                rows += [
                    "",
                    "| count | class | signature | detail | hint |",
                    "|---|---|---|---|---|",
                ]
                rows += [
                    f"| {f['count']} | {f['class']} | {f['signature']} | "
                    f"`{_cell(f['detail'])}` | {_cell(f['hint'] or '')} |"
                    for f in table["failures"]
                ]
            if table["cut_after"]:
                rows += ["", "Failed requests by the pod event just before they ended:", ""]
                rows += [f"- {event}: {n}" for event, n in table["cut_after"].items()]
            rows += ["", "Pod timeline (s from delete):", ""]
            rows += [
                f"- {e.get('t_from_delete_s', '?')}: {e['name']} {e.get('detail') or ''}".rstrip()
                for e in table["events"]
            ]
        return "\n".join(rows) + "\n"

    def write(self, path: Path) -> tuple[Path, Path]:
        """JSON at ``path``, markdown beside it (``.md``), each atomically; raises OSError."""
        data = self.to_dict()
        md = path.with_suffix(".md")
        write_atomic(path, json.dumps(data, indent=2, default=str))
        write_atomic(md, self.to_markdown(data))
        return path, md

    def fallback_path(self, suffix: str) -> Path:
        """Where the report goes when its own path cannot be written: the system temp dir,
        named by run start and run id, so several runs never overwrite each other."""
        run = self.environment.get("run_id") or f"pid{os.getpid()}"
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        return Path(tempfile.gettempdir()) / f"knative-drain-report-{stamp}-{run}{suffix}"

    def save(self, path: Path) -> list[str]:
        """Write JSON and markdown, falling back to the temp dir; never raises.

        The report is written after the whole run (hours on the seed profile): a path that
        vanished meanwhile must not lose it. Returns what went where, one line each.
        """
        try:
            data = self.to_dict()
            text = json.dumps(data, indent=2, default=str)
        except Exception as exc:  # a bug in rendering: say so, let the other writers run
            return [f"drain report not written: cannot render it: {one_line(exc)}"]
        lines: list[str] = []
        json_path = _write_or_fallback(path, text, self.fallback_path(".json"), lines)
        try:
            markdown = self.to_markdown(data)
        except Exception as exc:
            lines.append(f"drain report markdown not written: cannot render it: {one_line(exc)}")
            markdown = None
        md_path = None
        if markdown is not None:
            md_path = _write_or_fallback(
                path.with_suffix(".md"), markdown, self.fallback_path(".md"), lines
            )
        if json_path == path:  # where it was asked for (the markdown: if it went there too)
            beside = f" and {md_path}" if md_path == path.with_suffix(".md") else ""
            lines.append(f"drain report: {json_path}{beside}")
        return lines


def verdict_of(outcomes: set[str], infrastructure_errors: bool) -> str:
    """The run's verdict from its scenarios' outcomes (DrainReport.verdict; verify too)."""
    if "FAIL" in outcomes:
        return "fail"
    if infrastructure_errors:
        return "incomplete"
    return "known-knative-failures" if "known" in outcomes else "pass"


def verdict_line(verdict: str, totals: dict[str, Any]) -> str:
    """The markdown report's verdict line (README.md of a bundle, checked by verify)."""
    return (
        f"Verdict: **{verdict.upper()}** ({totals.get('expectation_met')} of "
        f"{totals.get('scenarios')} scenarios met their expectation; "
        f"{totals.get('requests')} requests)."
    )


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: a temp file beside it, then os.replace.

    Nobody (nor a crash mid-write) ever sees half a report, and an older report at the same
    path stays intact until the new one is complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # "x": the umask's mode, never clobbers
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # its directory may be gone or a file by now
            tmp.unlink()
        raise
    return path


def _write_or_fallback(path: Path, text: str, fallback: Path, lines: list[str]) -> Path | None:
    """``path`` if written there, else ``fallback`` (with one line saying so), else None."""
    try:
        return write_atomic(path, text)
    except OSError as exc:
        failed = f"cannot write {path} ({one_line(exc)})"
    try:
        write_atomic(fallback, text)
    except OSError as exc:
        lines.append(f"drain report LOST: {failed}, nor {fallback} ({one_line(exc)})")
        return None
    lines.append(f"drain report: {failed}; written to {fallback} instead")
    return fallback


def scenario_dict(result: ScenarioResult) -> dict[str, Any]:
    """``ScenarioResult.to_dict`` plus the fields the evidence needs under stable names."""
    data = result.to_dict()
    s = result.summary
    timeout = result.timeout_seconds or result.plan.timeout_seconds
    data["trigger"] = {"name": result.trigger, "at_s": result.plan.trigger_at_s}
    data["config"] = {
        "name": result.config,
        "timeout_seconds": timeout,
        "termination_grace_period_seconds": timeout,
        "max_gone_s": result.plan.max_gone_s,
    }
    data["tolerance"] = result.plan.min_strict_sli
    data["counts"] = {"classes": dict(s.classes), "signatures": dict(s.signatures)}
    data["sli"] = {"strict": s.strict_sli, "upstream": s.upstream_sli}
    return data


_OUTCOME_SHORT = {"ok": "OK", "known": "KNOWN", "FAIL": "FAIL"}
_OUTCOME_MD = {"ok": "OK", "known": "known Knative failure", "FAIL": "**FAIL**"}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def _failures_short(result: ScenarioResult) -> str:
    s = result.summary
    parts = [f"{k}={v}" for k, v in s.classes.items() if k != "ok"]
    parts += [f"[{k}={v}]" for k, v in s.signatures.items()]
    if result.killed:
        parts.append("SIGKILL " + ",".join(result.killed))
    return " ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


#: what the catalog pins to install a release from its published artefacts; what a run
#: used instead (a node image and Kourier built here, a vendor's own ingress) is in the
#: report's ``kubernetes`` and ``ingress``, so these never stand in for what ran
CATALOG_PINS = (
    "manifests",  # the published URLs; a stack built here installs its own (build_notes)
    "kourier_version",
    "kourier_tag",
    "kind_node_image",
    "min_kind_version",
    "node_image_reason",
    "kind_node_kubernetes",
)


def _pins_apart(release: dict[str, Any]) -> dict[str, Any]:
    """The release's facts, with the catalog's install pins under ``catalog_pins``."""
    pins = {k: release.pop(k) for k in CATALOG_PINS if k in release}
    release["catalog_pins"] = pins
    return release
