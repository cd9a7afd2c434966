"""Compare the gRPC load (load/grpc.py) with ghz on long unary calls over loopback h2c.

Why: the gRPC load must hold thousands of concurrent multi-minute calls on a 2-core CI
runner, like the HTTP engine (benchmarks/load_vs_hey.py), though it speaks HTTP/2 through
the pure-Python ``h2`` library. The server is the fixture app go-shutdown's gRPC form (real
grpc-go, built from the vendored sources); ghz (github.com/bojand/ghz, built here from its
Go module) gets one connection per call as ours does (``--connections`` = calls), so both
open the same sockets. CPU seconds (user+sys) and peak RSS of each client process alone
come from os.wait4; clients alternate round after round and are judged on the medians.

    python benchmarks/grpc_vs_ghz.py --calls 2000 --sleep-ms 10000 --rounds 3

Targets (issue 20): CPU and peak RSS within 1.5x of ghz, start skew within 100 ms.
Writes benchmarks/results/<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from load_vs_hey import _machine, _measure, _medians, _raise_fd_limit  # noqa: E402

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.121.0"  # served by the module proxy 2026-12-07
GO_SRC = ROOT / "fixtures" / "apps" / "_src" / "go"
PROTO = GO_SRC / "contract" / "drain.proto"
TARGET_SKEW_S = 0.100
TARGET_RATIO = 1.5

OURS_CLIENT = """
import json, sys
from collections import Counter
sys.path.insert(0, sys.argv[4])
from pytest_knative_drain.load.grpc import Calls, run_grpc_schedule_sync
result = run_grpc_schedule_sync(
    sys.argv[1], [Calls("b", int(sys.argv[2]), duration_s=float(sys.argv[3]))], deadline_s=120
)
records = result.records
print(json.dumps({
    "ok": sum(1 for r in records if r.error is None),
    "errors": dict(Counter(r.error for r in records if r.error is not None)),
    "start_skew_s": result.start_skew_s(),
    "schedule_wall_s": (result.finished_mono or 0) - result.started_mono,
}))
"""


def _go() -> str:
    return shutil.which("go") or "/usr/local/go/bin/go"


def _ghz() -> str:
    """ghz on PATH or in GOBIN, else built from its module (about a minute)."""
    gobin = Path(os.environ.get("GOBIN") or Path.home() / "go" / "bin")
    found = shutil.which("ghz") or (str(gobin / "ghz") if (gobin / "ghz").exists() else None)
    if found:
        return found
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    subprocess.run([_go(), "install", GHZ_MODULE], check=True, env=env)
    return str(gobin / "ghz")


def _server(workdir: Path) -> tuple[subprocess.Popen, int]:
    """go-shutdown's gRPC form on a free loopback port."""
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=vendor", "GOTOOLCHAIN": "local"}
    binary = workdir / "go-shutdown"
    subprocess.run(
        [_go(), "build", "-o", str(binary), "./cmd/go-shutdown"], cwd=GO_SRC, env=env, check=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(binary)],
        env={**os.environ, "PROTOCOL": "grpc", "PORT": str(port), "POD_NAME": "bench"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the gRPC server did not listen")


def _ghz_row(row: dict[str, Any]) -> dict[str, Any]:
    """Our row from ghz's JSON report (merged into ``row`` by _measure): ok calls, errors."""
    keep = {k: row[k] for k in ("client", "cmd", "exit", "wall_s", "cpu_s", "user_s", "sys_s")}
    keep["peak_rss_mb"] = row["peak_rss_mb"]
    keep["ok"] = (row.get("statusCodeDistribution") or {}).get("OK", 0)
    keep["errors"] = row.get("errorDistribution") or row.get("failure") or {}
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sleep-ms", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="grpc-2000x10s")
    args = parser.parse_args()
    _raise_fd_limit()
    ghz = _ghz()
    machine = _machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        server, port = _server(Path(tmp))
        ghz_cmd = [
            ghz, "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO.parent),
            "--call", "knativedrain.v1.Drain.Sleep", "-d", json.dumps(str(args.sleep_ms)),
            "-n", str(args.calls), "-c", str(args.calls), "--connections", str(args.calls),
            "--timeout", "120s", "-O", "json", f"127.0.0.1:{port}",
        ]  # fmt: skip
        ours_cmd = [
            sys.executable, "-c", OURS_CLIENT, f"http://127.0.0.1:{port}", str(args.calls),
            str(args.sleep_ms / 1000), str(ROOT),
        ]  # fmt: skip
        try:
            for _ in range(args.rounds):
                rows.append(_ghz_row(_measure("ghz", ghz_cmd)))
                rows.append(_measure("ours", ours_cmd))
        finally:
            server.kill()
            server.wait()
    medians = _medians(rows)
    ghz_m, ours_m = medians["ghz"], medians["ours"]
    verdict = {
        "cpu_ratio": round(ours_m["cpu_s"] / ghz_m["cpu_s"], 2),
        "rss_ratio": round(ours_m["peak_rss_mb"] / ghz_m["peak_rss_mb"], 2),
        "start_skew_s": ours_m.get("start_skew_s"),
    }
    verdict["met"] = (
        verdict["cpu_ratio"] <= TARGET_RATIO
        and verdict["rss_ratio"] <= TARGET_RATIO
        and (verdict["start_skew_s"] or 0) <= TARGET_SKEW_S
    )
    out = HERE / "results" / f"{args.name}.json"
    record = {"machine": machine, "args": vars(args), "rows": rows, "medians": medians}
    out.write_text(json.dumps(record | {"verdict": verdict}, indent=2) + "\n")
    print(f"{'client':6} {'cpu s':>7} {'rss MB':>7} {'wall s':>7} {'skew s':>7}  ok")
    for r in rows:
        skew = r.get("start_skew_s")
        print(
            f"{r['client']:6} {r['cpu_s']:7.2f} {r['peak_rss_mb']:7.1f} {r['wall_s']:7.2f} "
            f"{'' if skew is None else f'{skew:7.3f}':>7}  {r.get('ok')}"
        )
    print(json.dumps(verdict))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
