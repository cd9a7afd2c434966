"""The ``knative-drain`` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from misbehaving_servers import LoopbackServer

CLI = [sys.executable, "-m", "pytest_knative_drain.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_load_against_a_good_server_writes_the_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    with LoopbackServer("ok") as srv:
        proc = run(
            "load",
            srv.url + "?sleep=300",
            "--requests",
            "40",
            "--concurrency",
            "40",
            "--json",
            str(out),
        )
        assert srv.requests == 40
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    for key in ("total", "ok", "failures", "strict_sli", "upstream_sli", "start_skew_s", "classes"):
        assert key in summary
    assert (summary["total"], summary["ok"], summary["strict_sli"]) == (40, 40, 1.0)
    assert len(doc["records"]) == 40
    assert doc["records"][0]["pod"] == "pod-a"
    assert "strict SLI 1.0000" in proc.stdout


def test_load_against_a_502_server_fails_with_the_diagnosis(tmp_path: Path) -> None:
    with LoopbackServer("bad_gateway") as srv:
        proc = run("load", srv.url, "--requests", "5", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 1
    assert "queue-proxy" in proc.stdout and "SIGTERM" in proc.stdout
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["summary"]["classes"] == {"http_5xx": 5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["load", "https://127.0.0.1:1/", "--requests", "1"], "only http://"),
        (["load", "http://127.0.0.1:1/", "--requests", "0"], "--requests=0"),
        (["load", "http://127.0.0.1:1/", "--requests", "1", "--timeout", "-1"], "--timeout=-1"),
        (["plan", "--knative-version", "9.9"], "--knative-version=9.9"),
        (["plan", "--workers", "9"], "workers=9"),
        (["provision", "--platform", "existing"], "--platform=existing"),
        (["push-apps", "--registry", "https://reg.example.com"], "no scheme"),
        (["push-apps", "--registry", "reg.example.com", "--app", "nope"], "--app nope"),
        (["upstream", "--knative-version", "1.9", "--out", "x"], "--knative-version=1.9"),
        (["upstream", "--knative-version", "1.23", "--family", "nope", "--out", "x"], "--family"),
        (["upstream", "--knative-version", "1.23", "--timeout", "5", "--out", "x"], "--timeout=5"),
    ],
)
def test_bad_input_is_a_usage_error_without_traceback(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_prints_every_step_for_every_minor() -> None:
    for minor in ("1.10", "1.14", "1.23"):
        proc = run("plan", "--knative-version", minor)
        assert proc.returncode == 0, proc.stderr
        for step in ("create-cluster", "serving-crds", "serving-core", "kourier"):
            assert step in proc.stdout


def test_cleanup_dry_run_lists_and_removes_nothing() -> None:
    """Only things with our name or label are listed; a dry run leaves them in place."""
    proc = run("cleanup", "--dry-run", "--cluster-prefix", "knative-drain-no-such-prefix")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("thing(s)")
    assert "kind cluster" not in proc.stdout


def test_sigterm_stops_a_command_with_exit_143_and_one_line(tmp_path: Path) -> None:
    """A CI cancel (SIGTERM) mid-load: the guard unwinds the command as Ctrl-C would."""
    with LoopbackServer("ok") as srv:
        proc = subprocess.Popen(
            [*CLI, "load", srv.url + "?sleep=60000", "--requests", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while srv.requests < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.requests == 2, "the load never reached the server"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "knative-drain load: SIGTERM received: stopped" in err
    assert "Traceback" not in err


GO_BUILD_INTERRUPTED = """
import sys, tempfile
from pathlib import Path
from pytest_knative_drain.builders import gomod
from pytest_knative_drain.host.signals import Interrupted, SignalGuard

work, out = Path(sys.argv[1]), Path(sys.argv[2])
guard = SignalGuard.install()
try:
    with gomod.staged(out) as staging:
        (staging / "half-built").write_text("x")
        print("building", flush=True)
        gomod.build({".": "prog"}, staging, cwd=work, env=gomod.go_env(GOCACHE=sys.argv[3]))
except Interrupted as exc:
    print("interrupted", exc.signame, flush=True)
finally:
    guard.uninstall()
"""


def test_a_go_build_cut_by_sigterm_leaves_no_work_dir_staging_or_compiler(tmp_path: Path) -> None:
    """Measured first: ``go build`` dies on SIGTERM leaving its go-build* work dir and its
    compile children; run_go must remove the one and kill the others, and ``staged`` must
    leave no half-built cache entry."""
    work = tmp_path / "prog"
    work.mkdir()
    (work / "go.mod").write_text("module example.local/prog\n\ngo 1.22\n")
    # a cold cache of its own: net/http and its deps take go well over the 3 s below
    (work / "main.go").write_text('package main\n\nimport _ "net/http"\n\nfunc main() {}\n')
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "cache" / "prog-r1"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", GO_BUILD_INTERRUPTED, str(work), str(out), str(tmp_path / "gc")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "building"
    deadline = time.monotonic() + 60
    while not _go_processes(tmpdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # compile children running, the work dir filling
    assert _go_processes(tmpdir), "go was never seen running"
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert rest.strip() == "interrupted SIGTERM", err
    assert list(tmpdir.iterdir()) == []  # no knative-drain-go-*, no go-build*
    assert list(out.parent.iterdir()) == []  # neither prog-r1 nor prog-r1.tmp
    time.sleep(0.5)
    assert _go_processes(tmpdir) == []


def _go_processes(tmpdir: Path) -> list[int]:
    """Processes whose environment points GOTMPDIR into ``tmpdir`` (go and its children)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"GOTMPDIR={tmpdir}".encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found
