"""The gRPC load (load/grpc.py) against real gRPC servers: the fixture apps themselves
(grpc-go and grpcio, their gRPC form, with real SIGTERMs) and an h2c server that misbehaves
on purpose (misbehaving_h2.py).

Every ending a call can have is produced on a real socket and its record, class, signature
and hint asserted exactly; servers count calls, which proves none was retried.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from misbehaving_h2 import H2Server

from pytest_knative_drain.load import Event
from pytest_knative_drain.load.grpc import Calls, run_grpc_schedule_sync, status_class
from pytest_knative_drain.run import verdict

SRC = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "_src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def go_apps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """go-shutdown and go-exit built from the fixture sources (vendored, offline)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        pytest.fail("go is needed to build the Go fixture apps (the machine's Go toolchain)")
    out = tmp_path_factory.mktemp("go-apps")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=vendor", "GOTOOLCHAIN": "local"}
    subprocess.run([go, "build", "-o", f"{out}/", "./cmd/..."], cwd=SRC / "go", env=env, check=True)
    return out


class App:
    """A fixture app's gRPC form (PROTOCOL=grpc) as a real process on a loopback port."""

    def __init__(self, argv: list[str], **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env, "PROTOCOL": "grpc", "PORT": str(self.port), "POD_NAME": "p1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"{argv} did not listen on {self.port}")

    def term(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def python_app() -> Iterator[type[App]]:
    started: list[App] = []

    def start(**env: str) -> App:
        app = App([sys.executable, str(SRC / "python" / "grpc_app.py")], **env)
        started.append(app)
        return app

    yield start  # type: ignore[misc]
    for app in started:
        app.close()


def _calls(n_unary: int = 2, n_stream: int = 2, duration_s: float = 3.0) -> list[Calls]:
    return [
        Calls("unary", n_unary, method="unary", duration_s=duration_s),
        Calls("stream", n_stream, method="stream", duration_s=duration_s),
    ]


def _run_with_sigterm(app: App, at_s: float = 1.0) -> list:
    result = run_grpc_schedule_sync(
        app.url, _calls(), [Event("sigterm", at_s, app.term)], deadline_s=30
    )
    return result.records


@pytest.mark.parametrize("grace", ["600"])
def test_python_app_drains_in_flight_calls_on_sigterm(python_app, grace: str) -> None:
    """grpcio's server.stop(grace): calls in flight at SIGTERM end with their answer."""
    app = python_app(GRACEFUL_TIMEOUT=grace)
    records = _run_with_sigterm(app)
    assert [(r.kind, r.grpc_status, r.error, r.status) for r in records] == [
        ("grpc", "OK", None, 200)
    ] * 4
    unary, stream = records[0], records[2]
    assert unary.body == "slept 3000 ms on p1" and unary.pod == "p1"
    assert stream.body.startswith("stream complete: ") and stream.messages_received == 4
    assert all(2.9 < r.duration_s < 4.5 for r in records)
    assert verdict.summarize(records, planned=4).strict_sli == 1.0
    app.proc.wait(timeout=10)
    assert app.proc.returncode == 0


def test_python_app_with_short_grace_is_caught(python_app) -> None:
    """server.stop(1): calls still running a second after SIGTERM are aborted."""
    app = python_app(GRACEFUL_TIMEOUT="1")
    records = _run_with_sigterm(app)
    assert {r.error for r in records} == {"grpc_unavailable"}
    assert all("Cancelling all calls" in r.error_detail for r in records)
    assert all(1.5 < r.duration_s < 3.0 for r in records)  # SIGTERM at 1 s + 1 s grace
    assert [min(r.messages_received, 2) for r in records] == [0, 0, 2, 2]
    j = verdict.diagnose(records[0])
    assert (j.cls, j.signature, j.hint) == (
        "grpc_unavailable",
        "unknown",
        verdict.HINTS["grpc_cut"],
    )
    assert verdict.summarize(records, planned=4).strict_sli == 0.0


def test_go_shutdown_graceful_stop_keeps_every_call(go_apps: Path) -> None:
    app = App([str(go_apps / "go-shutdown")])
    try:
        records = _run_with_sigterm(app)
        assert [(r.grpc_status, r.error) for r in records] == [("OK", None)] * 4
        assert records[2].body.startswith("stream complete: 3 ticks in 3")
        app.proc.wait(timeout=10)
        assert app.proc.returncode == 0
    finally:
        app.close()


def test_go_exit_stop_at_once_is_caught(go_apps: Path) -> None:
    """grpc.Server.Stop() and exit at SIGTERM: every call in flight is cut, at the SIGTERM."""
    app = App([str(go_apps / "go-exit")])
    try:
        records = _run_with_sigterm(app)
    finally:
        app.close()
    # Stop() closes the connections with no GOAWAY: a unary call had no answer yet, a
    # stream had its headers and first message
    assert [r.error for r in records] == ["empty_reply", "empty_reply", "grpc_cut", "grpc_cut"]
    assert all(0.8 < r.duration_s < 2.0 for r in records)
    # the SIGTERM at 1 s races the stream's second tick
    assert [min(r.messages_received, 1) for r in records] == [0, 0, 1, 1]
    assert [r.status for r in records] == [None, None, 200, 200]


@pytest.mark.parametrize(
    ("behaviour", "cls", "status"),
    [
        ("bad_gateway", "grpc_http_status", 502),
        ("rst_stream", "grpc_rst_stream", 200),
        ("goaway", "grpc_goaway", 200),
        ("no_final", "grpc_incomplete", 200),
    ],
)
def test_each_bad_ending_has_its_class_and_is_never_retried(
    behaviour: str, cls: str, status: int
) -> None:
    with H2Server(behaviour) as srv:
        records = run_grpc_schedule_sync(
            srv.url, [Calls("s", 3, method="stream", duration_s=5)], deadline_s=20
        ).records
        time.sleep(0.2)
        assert srv.calls == 3  # one call each: none was sent again
    assert [(r.error, r.status) for r in records] == [(cls, status)] * 3
    assert verdict.summarize(records, planned=3).strict_sli == 0.0
    # gRPC is no spoof round trip: the upstream-equivalent figure excludes nothing
    assert verdict.summarize(records, planned=3).upstream_sli == 0.0


def test_a_proxy_answer_is_signed_like_http() -> None:
    """An HTTP answer instead of gRPC keeps its status, body and Server header: queue-proxy's
    502 ``EOF`` is queue-proxy's as for HTTP, Envoy's Server header alone is the ingress
    guess; a cut without an answer is read against the pod timeline."""
    with H2Server("bad_gateway") as srv:
        plain = run_grpc_schedule_sync(srv.url, [Calls("u", 1)], deadline_s=10).records[0]
    with H2Server("bad_gateway", server_header="envoy") as srv:
        envoy = run_grpc_schedule_sync(srv.url, [Calls("u", 1)], deadline_s=10).records[0]
    assert (plain.status, plain.body, plain.grpc_status) == (502, "EOF\n", None)
    j = verdict.judge(plain)
    assert (j.cls, j.signature, j.hint) == (
        "grpc_http_status",
        "queue-proxy",
        verdict.HINTS["app_dropped"],
    )
    assert (envoy.server, verdict.judge(envoy).signature) == ("envoy", "queue-proxy")

    with H2Server("rst_stream") as srv:
        cut = run_grpc_schedule_sync(srv.url, [Calls("u", 1)], deadline_s=10).records[0]
    assert cut.error_detail == "RST_STREAM INTERNAL_ERROR after 1 messages"

    class Ev:
        def __init__(self, name: str, mono: float, detail: str = "") -> None:
            self.name, self.mono, self.detail = name, mono, detail

    end = cut.finished_mono
    j = verdict.diagnose(cut, [Ev("user-container exited", end - 0.2, "exit code 0")])
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["app_cut_grpc"])
    j = verdict.diagnose(cut, [Ev("queue-proxy exited", end - 0.1, "exit code 0")])
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["qp_exited_h2c"])
    # the app's exit is stamped after the cut it caused; queue-proxy's later exit is no cause
    j = verdict.diagnose(
        cut,
        [
            Ev("user-container exited", end + 0.01, "exit code 0"),
            Ev("queue-proxy exited", end + 0.9, "exit code 0"),
        ],
    )
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["app_cut_grpc"])
    assert verdict.diagnose(cut, []).signature == "unknown"


def test_deadline_and_schedule_bound() -> None:
    with H2Server("hold") as srv:
        deadline = run_grpc_schedule_sync(
            srv.url, [Calls("u", 2, deadline_s=0.5)], deadline_s=10
        ).records
        bound = run_grpc_schedule_sync(srv.url, [Calls("u", 1)], deadline_s=1.0).records
    assert {r.error for r in deadline} == {"grpc_deadline"}
    assert bound[0].error == "timeout" and "schedule deadline of 1.0 s" in bound[0].error_detail


def test_refused_and_authority() -> None:
    port = _free_port()
    rec = run_grpc_schedule_sync(f"http://127.0.0.1:{port}", [Calls("u", 1)], deadline_s=10)
    assert rec.records[0].error == "refused"


def test_status_classes() -> None:
    assert [status_class(c) for c in (14, 13, 1, 4, 5, 2)] == [
        "grpc_unavailable",
        "grpc_internal",
        "grpc_cancelled",
        "grpc_deadline",
        "grpc_status",
        "grpc_status",
    ]


def test_bad_calls_spec_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="method: one of unary, stream"):
        Calls("c", 1, method="bidi")
    with pytest.raises(ValueError, match="calls: an integer >= 0"):
        Calls("c", -1)
    with pytest.raises(ValueError, match="deadline_s: None or seconds > 0"):
        Calls("c", 1, deadline_s=0)
    with pytest.raises(ValueError, match="h2c needs an http:// target"):
        run_grpc_schedule_sync("https://127.0.0.1:1", [Calls("c", 1)])
