"""Compare the load engine with hey (and optionally aiohttp) on long loopback requests.

Why: the engine must hold thousands of concurrent multi-minute requests on a
2-core CI runner without becoming the bottleneck. Each client runs in its own
process against one loopback server process; CPU seconds (user+sys) and peak RSS
come from os.wait4 on that client alone.

    python benchmarks/load_vs_hey.py --requests 2000 --sleep-ms 10000 --rounds 3 [--with-aiohttp]

Clients run alternately, round after round (hey, ours, hey, ours ...), because the
machine is shared and noisy; targets are judged on the medians. Every client is
measured the same way: the whole process, interpreter start-up and imports included.
Writes benchmarks/results/<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_SKEW_S = 0.100
TARGET_CPU_RATIO = 1.5


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the loopback server (own process) -------------------------------------------------


async def _serve() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            match = re.search(rb"sleep=(\d+)", target)
            ms = int(match.group(1)) if match else 0
            await asyncio.sleep(ms / 1000)
            body = b"slept %d ms\n" % ms
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n"
                b"x-pod-name: bench\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # serve until the parent closes stdin


# --- clients (own process each, report JSON on stdout) ---------------------------------


# Our client runs as this small program, not through this script: its process then pays
# for the interpreter, the engine and json only, as hey's pays for hey alone.
OURS_CLIENT = """
import json, sys
from collections import Counter
sys.path.insert(0, sys.argv[4])
from pytest_knative_drain.load import run_batch
result = run_batch(sys.argv[1], int(sys.argv[2]), timeout_s=float(sys.argv[3]))
records = result.records
sent = [r.sent_mono for r in records if r.sent_mono is not None]
print(json.dumps({
    "ok": sum(1 for r in records if r.error is None and r.status == 200),
    "statuses": dict(Counter(str(r.status) for r in records if r.error is None)),
    "errors": dict(Counter(r.error for r in records if r.error is not None)),
    "start_skew_s": result.start_skew_s(),
    "first_write_after_start_s": (min(sent) - result.started_mono) if sent else None,
    "schedule_wall_s": (result.finished_mono or 0) - result.started_mono,
}))
"""


def _client_aiohttp(url: str, requests: int, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    async def main() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> str:
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        return str(resp.status)
                except Exception as exc:  # counted, this is a comparison run
                    return type(exc).__name__

            outcomes = Counter(await asyncio.gather(*(one() for _ in range(requests))))
        return {"ok": outcomes.get("200", 0), "statuses": dict(outcomes), "start_skew_s": None}

    return asyncio.run(main())


# --- the harness -----------------------------------------------------------------------


def _measure(name: str, cmd: list[str]) -> dict[str, Any]:
    """Run one client process; CPU and peak RSS of that process alone (os.wait4)."""
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    row: dict[str, Any] = {
        "client": name,
        "cmd": " ".join(cmd),
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: ru_maxrss is KiB
    }
    text = out.decode(errors="replace")
    if name == "hey":
        codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", text))
        row["ok"] = int(codes.get("200", 0))
        row["statuses"] = {k: int(v) for k, v in codes.items()}
        errors = text.split("Error distribution:", 1)
        row["errors"] = errors[1].strip()[:500] if len(errors) > 1 else ""
        row["start_skew_s"] = None
    else:
        try:
            row.update(json.loads(text.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            row["ok"] = 0
            row["failure"] = (text + stderr)[-2000:]
    if proc.returncode:
        row["stderr"] = stderr[-2000:]
    return row


def _machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    try:
        hey = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        hey = ""
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit or "none (no commit yet)",
        "hey_version": hey or "unknown",
        "loadavg_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _medians(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per client: median, min and max of CPU, RSS, wall and skew over the rounds."""
    out: dict[str, dict[str, Any]] = {}
    for client in dict.fromkeys(r["client"] for r in rows):
        mine = [r for r in rows if r["client"] == client]
        entry: dict[str, Any] = {"rounds": len(mine)}
        for key in ("cpu_s", "user_s", "sys_s", "peak_rss_mb", "wall_s", "start_skew_s"):
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                entry[key] = round(statistics.median(values), 4)
                entry[key + "_range"] = [min(values), max(values)]
        out[client] = entry
    return out


def _summary(med: dict[str, dict[str, Any]]) -> str:
    hey = med.get("hey")
    lines = []
    for client, m in med.items():
        ratio = f" = {m['cpu_s'] / hey['cpu_s']:.2f}x hey" if hey and hey["cpu_s"] else ""
        lo, hi = m["cpu_s_range"]
        lines.append(
            f"{client}: median CPU {m['cpu_s']:.3f} s (range {lo:.3f}-{hi:.3f}){ratio}, "
            f"median RSS {m['peak_rss_mb']:.1f} MB over {m['rounds']} rounds"
        )
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]], hey_row: dict[str, Any] | None) -> str:
    head = ("round", "client", "ok", "wall s", "CPU s", "user", "sys", "xhey", "RSS MB", "skew ms")
    lines = ["{:>5} {:8} {:>6} {:>7} {:>6} {:>5} {:>5} {:>5} {:>7} {:>8}".format(*head)]
    for r in rows:
        ratio = ""
        if hey_row and hey_row["cpu_s"]:
            ratio = f"{r['cpu_s'] / hey_row['cpu_s']:.2f}"
        skew = r.get("start_skew_s")
        skew_ms = f"{skew * 1000:.1f}" if skew is not None else "n/a"
        lines.append(
            f"{r.get('round', 1):>5} {r['client']:8} {r.get('ok', 0):>6} {r['wall_s']:>7.2f} "
            f"{r['cpu_s']:>6.2f} {r['user_s']:>5.2f} {r['sys_s']:>5.2f} {ratio:>5} "
            f"{r['peak_rss_mb']:>7.1f} {skew_ms:>8}"
        )
    return "\n".join(lines) + "\n(xhey: against hey's median CPU)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sleep-ms", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 1)")
    parser.add_argument("--with-aiohttp", action="store_true")
    parser.add_argument("--skip-hey", action="store_true")
    parser.add_argument("--name", default=None, help="results file name (no extension)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=("aiohttp",), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests={args.requests}: must be >= 1")
    if args.sleep_ms < 0:
        parser.error(f"--sleep-ms={args.sleep_ms}: must be >= 0")
    if args.timeout <= 0:
        parser.error(f"--timeout={args.timeout}: must be > 0")
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: must be >= 1")
    _raise_fd_limit()
    if args.serve:
        asyncio.run(_serve())
        return 0
    if args.client:
        print(json.dumps(_client_aiohttp(args.url, args.requests, args.timeout)))
        return 0

    hey = shutil.which("hey")
    if hey is None and not args.skip_hey:
        parser.error("hey is not installed (apt-get install hey), or pass --skip-hey")
    machine = _machine()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    rows: list[dict[str, Any]] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/?sleep={args.sleep_ms}"
        n = str(args.requests)
        own = [sys.executable, __file__, "--url", url, "--requests", n]
        for rnd in range(1, args.rounds + 1):
            if not args.skip_hey:
                timeout = str(int(args.timeout))
                cmd = [hey, "-c", n, "-n", n, "-t", timeout, url]
                rows.append({"round": rnd, **_measure("hey", cmd)})
            cmd = [sys.executable, "-c", OURS_CLIENT, url, n, str(args.timeout), str(ROOT)]
            rows.append({"round": rnd, **_measure("ours", cmd)})
            if args.with_aiohttp:
                cmd = [*own, "--client", "aiohttp", "--timeout", str(args.timeout)]
                rows.append({"round": rnd, **_measure("aiohttp", cmd)})
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    med = _medians(rows)
    hey_m, ours_m = med.get("hey"), med["ours"]
    targets = {
        "start_skew_ok": all(
            r.get("start_skew_s") is not None and r["start_skew_s"] <= TARGET_SKEW_S
            for r in rows
            if r["client"] == "ours"
        ),
        "all_ok": all(r.get("ok") == args.requests for r in rows if r["client"] == "ours"),
    }
    if hey_m:
        targets["cpu_ok"] = ours_m["cpu_s"] <= TARGET_CPU_RATIO * hey_m["cpu_s"]
        targets["rss_ok"] = ours_m["peak_rss_mb"] <= hey_m["peak_rss_mb"]
    name = args.name or f"{args.requests}x{args.sleep_ms}ms"
    doc = {
        "name": name,
        "requests": args.requests,
        "sleep_ms": args.sleep_ms,
        "machine": machine,
        "targets": targets,
        "medians": med,
        "results": rows,
    }
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(_table(rows, med.get("hey")))
    print(_summary(med))
    print("targets:", " ".join(f"{k}={v}" for k, v in targets.items()))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
