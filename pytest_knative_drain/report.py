"""The run record: one JSON document for the whole run, plus a markdown rendering.

Like pytest-benchmark's run record, it carries machine and commit info so a
result can be traced to where and on what it was measured.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .options import DrainOptions
    from .runner import ScenarioResult


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
        self.environment: dict[str, Any] = {}  # platform facts: versions, ingress, images
        self.started = dt.datetime.now(dt.timezone.utc)

    def add(self, result: ScenarioResult) -> None:
        self.results.append(result)

    def to_dict(self) -> dict[str, Any]:
        release = self.options.release
        return {
            "tool": {"name": "pytest-knative-drain", "version": __version__},
            "started": self.started.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
            "platform": self.options.platform,
            "knative": release.to_dict(),
            "profile": self.options.profile,
            "environment": self.environment,
            "machine": machine_info(),
            "commit": commit_info(),
            "verdict": "pass" if all(r.expectation_met for r in self.results) else "fail",
            "scenarios": [r.to_dict() for r in self.results],
        }

    def table_lines(self) -> list[str]:
        head = (
            f"{'scenario':34} {'app':32} {'ok/total':>9} {'strict':>7} {'upstream':>8} "
            f"{'gone s':>7} {'expected':>9} {'result':>6}"
        )
        lines = [head]
        for r in self.results:
            s = r.summary
            gone = f"{r.gone_after_s:.1f}" if r.gone_after_s is not None else "-"
            lines.append(
                f"{r.scenario:34} {r.app:32} {s.ok:>4}/{s.planned:<4} {s.strict_sli:>7.3f} "
                f"{s.upstream_sli:>8.3f} {gone:>7} {r.expected_label:>9} "
                f"{'OK' if r.expectation_met else 'FAIL':>6}"
            )
        return lines

    def to_markdown(self) -> str:
        data = self.to_dict()
        k = data["knative"]
        rows = [
            "# Knative drain conformance report",
            "",
            "| product | value |",
            "|---|---|",
            f"| Knative Serving | {k['version']} |",
            f"| platform | {data['platform']} |",
            f"| profile | {data['profile']} |",
            f"| tool | pytest-knative-drain {__version__} |",
            f"| commit | {data['commit']['id']} |",
            f"| verdict | **{data['verdict']}** |",
            "",
            "| scenario | app | requests ok | strict SLI | upstream SLI | pod gone (s) "
            "| expected | result | problems |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            s = r.summary
            gone = f"{r.gone_after_s:.1f}" if r.gone_after_s is not None else "-"
            rows.append(
                f"| {r.scenario} | {r.app} | {s.ok}/{s.planned} | {s.strict_sli:.4f} | "
                f"{s.upstream_sli:.4f} | {gone} | {r.expected_label} | "
                f"{'OK' if r.expectation_met else 'FAIL'} | {'; '.join(r.problems) or '-'} |"
            )
        return "\n".join(rows) + "\n"

    def write(self, path: Path) -> tuple[Path, Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        md = path.with_suffix(".md")
        md.write_text(self.to_markdown())
        return path, md
