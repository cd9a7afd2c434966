"""The local quick conformance suite with cases at once: wall, CPU, memory, skew, verdicts.

    python benchmarks/concurrent_suite.py                        # one run, every case at once
    python benchmarks/concurrent_suite.py --repeat 10            # 10 runs in a row
    python benchmarks/concurrent_suite.py --concurrency 1 -k "deletion_timeliness"  # sequential
    python benchmarks/concurrent_suite.py --profile seed         # batches of 200 x 300 s
    python benchmarks/concurrent_suite.py --installed-python /tmp/v/bin/python
                                        # the suite of the installed wheel, from outside
    python benchmarks/concurrent_suite.py --platform kind --pytest-arg=--keep-cluster \
        --concurrency 1 -k "..."        # cases on a kind cluster, one after another
    python benchmarks/concurrent_suite.py --xdist-python /tmp/xd/bin/python --repeat 0
                                        # what pytest-xdist workers cost to start, no cases

Each run is ``python -m pytest conformance --platform=local --knative-version=1.14`` in a
subprocess (``--drain-concurrency``, default auto: every selected case at once). While it
runs, psutil samples every 0.5 s: the machine's CPU (of all cores) and used memory, and the
RSS of pytest's process tree; containers' processes are not pytest's children, so the
machine's used memory minus what was used just before the run is the run's footprint (the
machine is shared: other work shows up in both). After it: the drain report (each case's
outcome, verdict, start skew, pod lifetime), the JUnit file (testcases, failures, errors)
and the exit code. A result is *unexpected* when a case's outcome is FAIL (verdict not as
the app's expectation, or a recorded Knative failure that did not show), a test failed or
errored, or the run exited other than 0; the summary also says whether any case's verdict
differed between runs. Results go to benchmarks/results/ as JSON.

``--xdist-python``: a Python with pytest-xdist installed (a venv made with
``--system-site-packages``, so this checkout's plugin is the one loaded); for each worker
count it starts ``pytest -n N`` on the conformance suite selecting nothing, so what is
measured is only the workers' start-up and collection: wall, CPU seconds of the whole
process tree (RUSAGE_CHILDREN) and its peak RSS; the same without xdist is the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class Sampler:
    """Machine CPU/memory and the RSS of a process tree, every ``every_s``, in a thread."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid = pid
        self.every_s = every_s
        self.cpu: list[float] = []
        self.used_mb: list[float] = []
        self.tree_rss_mb: list[float] = []
        self.tree_procs: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        psutil.cpu_percent(None)  # the next call measures from here
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.cpu.append(psutil.cpu_percent(None))
            self.used_mb.append(psutil.virtual_memory().used / 2**20)
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.tree_rss_mb.append(rss / 2**20)
            self.tree_procs.append(len(procs))


def _junit(path: Path) -> dict[str, int]:
    if not path.exists():
        return {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    suites = ET.parse(path).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    assert suite is not None
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _cases(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in report.get("scenarios", []):
        events = s.get("events") or []
        walls = [e["wall"] for e in events if "wall" in e]
        config = s["config"]["name"] if isinstance(s["config"], dict) else s["config"]
        cid = f"{s['scenario']}@{config}/{s['app']}"
        out.append(
            {
                "case": cid,
                "outcome": s["outcome"],
                "verdict": s["verdict"],
                "expected": s["expected"],
                "start_skew_s": s["summary"].get("start_skew_s"),
                "strict_sli": s["summary"].get("strict_sli"),
                "duration_s": s.get("duration_s"),
                "pod_from_wall": min(walls) if walls else None,
                "pod_to_wall": max(walls) if walls else None,
            }
        )
    return out


def installed_from(python: str) -> str:
    """Where ``python`` imports the plugin from: proof the run used the installed wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    return subprocess.run(
        [python, "-c", "import pytest_knative_drain; print(pytest_knative_drain.__file__)"],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_suite(
    concurrency: str,
    select: str | None,
    version: str,
    profile: str = "quick",
    installed_python: str | None = None,
    platform: str = "local",
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """One run of the suite; with ``installed_python``, the suite of the installed wheel
    (``pytest --pyargs``) from a directory outside the checkout, as a vendor runs it."""
    work = Path(tempfile.mkdtemp(prefix="knative-drain-bench-"))
    report_path, junit_path = work / "drain-report.json", work / "junit.xml"
    env = None
    if installed_python:
        suite = ["--pyargs", "pytest_knative_drain.conformance"]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    else:
        suite = [str(ROOT / "conformance")]
    cmd = [
        installed_python or sys.executable,
        "-m",
        "pytest",
        *suite,
        f"--platform={platform}",
        f"--knative-version={version}",
        f"--profile={profile}",
        f"--drain-concurrency={concurrency}",
        f"--drain-report={report_path}",
        f"--junitxml={junit_path}",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
    ]
    if select:
        cmd += ["-k", select]
    cmd += extra or []
    used_before = psutil.virtual_memory().used / 2**20
    started = time.monotonic()
    with (work / "pytest.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        with Sampler(proc.pid) as sampler:
            code = proc.wait()
    wall = time.monotonic() - started
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    cases = _cases(report)
    junit = _junit(junit_path)
    unexpected = [c["case"] for c in cases if c["outcome"] == "FAIL"]
    skews = [c["start_skew_s"] for c in cases if c["start_skew_s"] is not None]
    starts = [c["pod_from_wall"] for c in cases if c["pod_from_wall"]]
    ends = [c["pod_to_wall"] for c in cases if c["pod_to_wall"]]
    tail = (work / "pytest.log").read_text(errors="replace").splitlines()[-15:]
    return {
        "command": cmd,
        "profile": profile,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cases": len(cases),
        "junit": junit,
        "unexpected": unexpected,
        # tests that failed or errored (a FAIL outcome is also a failed test), or a bad exit
        "unexpected_count": max(len(unexpected), junit["failures"] + junit["errors"])
        or int(code != 0),
        "longest_case_s": max((c["duration_s"] or 0 for c in cases), default=None),
        "pods_span_s": round(max(ends) - min(starts), 1) if starts and ends else None,
        "start_skew_ms": {
            "median": round(statistics.median(skews) * 1000, 2) if skews else None,
            "max": round(max(skews) * 1000, 2) if skews else None,
        },
        "cpu_percent_of_all_cores": {
            "peak": max(sampler.cpu, default=None),
            "mean": round(statistics.fmean(sampler.cpu), 1) if sampler.cpu else None,
        },
        "machine_used_mb": {
            "before": round(used_before),
            "peak": round(max(sampler.used_mb, default=used_before)),
            "peak_delta": round(max(sampler.used_mb, default=used_before) - used_before),
        },
        "pytest_tree_rss_peak_mb": round(max(sampler.tree_rss_mb, default=0)),
        "drain_concurrency": report.get("environment", {}).get("drain_concurrency"),
        "per_case": cases,
        "log_tail": tail,
        "workdir": str(work),
    }


def xdist_cost(python: str, workers: list[int], version: str) -> list[dict[str, Any]]:
    """Start-up and collection of ``pytest -n N`` (no case selected) vs plain pytest."""
    out = []
    for n in [0, *workers]:
        cmd = [
            python,
            "-m",
            "pytest",
            str(ROOT / "conformance"),
            "--platform=local",
            f"--knative-version={version}",
            "-k",
            "no_case_has_this_name",
            "-p",
            "no:cacheprovider",
            "-q",
        ]
        cmd += ["-n", str(n)] if n else ["-p", "no:xdist"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE, text=True)
        with Sampler(proc.pid, every_s=0.1) as sampler:
            stdout, _ = proc.communicate()
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out.append(
            {
                "workers": n,
                "exit_code": proc.returncode,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "processes_peak": max(sampler.tree_procs, default=1),
                "rss_peak_mb": round(max(sampler.tree_rss_mb, default=0)),
                "last_line": stdout.strip().splitlines()[-1] if stdout.strip() else "",
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs in a row (0: none)")
    parser.add_argument("--concurrency", default="auto", help="--drain-concurrency")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k (default: all)")
    parser.add_argument("--knative-version", default="1.14")
    parser.add_argument("--profile", default="quick", choices=("quick", "seed"))
    parser.add_argument("--platform", default="local", choices=("local", "kind", "existing"))
    parser.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        help="passed to pytest as is (repeat): --keep-cluster, --context ...",
    )
    parser.add_argument(
        "--installed-python",
        default=None,
        help="a venv's python with the wheel installed: runs --pyargs from outside the checkout",
    )
    parser.add_argument("--xdist-python", default=None, help="a python with pytest-xdist")
    parser.add_argument("--xdist-workers", default="2,8,62")
    parser.add_argument("--name", default=None, help="results file name (no .json)")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "started": started,
        "machine": {"cpus": os.cpu_count(), "memory_mb": psutil.virtual_memory().total // 2**20},
        "command": sys.argv,
        "runs": runs,
    }
    if args.installed_python:
        out["plugin_imported_from"] = installed_from(args.installed_python)
    name = args.name or f"concurrent-suite-{started.replace(':', '')}"
    path = RESULTS / f"{name}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.xdist_python:
        workers = [int(w) for w in args.xdist_workers.split(",") if w]
        out["xdist_cost"] = xdist_cost(args.xdist_python, workers, args.knative_version)
        path.write_text(json.dumps(out, indent=2) + "\n")
    for i in range(args.repeat):
        run = run_suite(
            args.concurrency,
            args.select,
            args.knative_version,
            args.profile,
            args.installed_python,
            args.platform,
            args.pytest_arg,
        )
        runs.append(run)
        print(
            f"run {i + 1}/{args.repeat}: exit {run['exit_code']}, {run['cases']} cases in "
            f"{run['wall_s']} s (longest case {run['longest_case_s']} s), unexpected "
            f"{run['unexpected_count']}, skew median/max {run['start_skew_ms']['median']}/"
            f"{run['start_skew_ms']['max']} ms, CPU peak/mean "
            f"{run['cpu_percent_of_all_cores']['peak']}/{run['cpu_percent_of_all_cores']['mean']}"
            f" %, memory +{run['machine_used_mb']['peak_delta']} MB",
            flush=True,
        )
        path.write_text(json.dumps(out, indent=2) + "\n")  # after every run: nothing lost
    if runs:
        verdicts: dict[str, set[str]] = {}
        for run in runs:
            for c in run["per_case"]:
                verdicts.setdefault(c["case"], set()).add(f"{c['verdict']}/{c['outcome']}")
        walls = [r["wall_s"] for r in runs]
        out["summary"] = {
            "runs": len(runs),
            "unexpected_total": sum(r["unexpected_count"] for r in runs),
            "wall_s": {"min": min(walls), "median": statistics.median(walls), "max": max(walls)},
            "longest_case_s_max": max(r["longest_case_s"] or 0 for r in runs),
            "cases_whose_verdict_changed": sorted(k for k, v in verdicts.items() if len(v) > 1),
            "start_skew_ms_max": max((r["start_skew_ms"]["max"] or 0) for r in runs),
            "cpu_peak_percent": max((r["cpu_percent_of_all_cores"]["peak"] or 0) for r in runs),
            "memory_peak_delta_mb": max(r["machine_used_mb"]["peak_delta"] for r in runs),
        }
        print(json.dumps(out["summary"], indent=2))
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {path}")
    return 1 if runs and out["summary"]["unexpected_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
