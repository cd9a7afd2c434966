"""Streams through the load engine against real loopback servers that end them in every way.

A chunked stream is complete only when its last line is the app's end line ("stream
complete ...") and the terminating chunk arrived; servers here stream a few lines, then
finish properly, close mid-body (FIN), reset (RST), or terminate the framing without the
end line. The engine runs unchanged for plain requests (tests/test_load.py).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from pytest_knative_drain.load import Batch, run_schedule_sync
from pytest_knative_drain.load.records import BODY_LIMIT, BODY_TAIL
from pytest_knative_drain.run import verdict

END = "stream complete"
_LINGER_0 = struct.pack("ii", 1, 0)
HEAD = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-pod-name: pod-s\r\n"
    b"Content-Type: text/plain\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class StreamServer:
    """Streams ``lines`` tick lines 50 ms apart, then ends as ``behaviour`` says:
    "ok" (end line + terminating chunk), "cut" (FIN), "reset" (RST), "no-end" (terminating
    chunk without the end line)."""

    def __init__(self, behaviour: str, lines: int = 40) -> None:
        self.behaviour = behaviour
        self.lines = lines
        self.connections = 0
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def __enter__(self) -> StreamServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop: asyncio.Future[None] = self._loop.create_future()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD)
        for i in range(self.lines):
            writer.write(_chunk(b"tick %d\n" % i))
            await writer.drain()
            await asyncio.sleep(0.05)
        if self.behaviour == "ok":
            writer.write(_chunk(f"{END}: {self.lines} ticks\n".encode()) + b"0\r\n\r\n")
        elif self.behaviour == "no-end":
            writer.write(b"0\r\n\r\n")
        elif self.behaviour == "reset":
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0
            )
            writer.transport.abort()
            return
        await writer.drain()
        writer.close()


def _stream(srv: StreamServer, n: int = 3) -> list:
    batch = Batch("streams", n, path="/stream?duration=1", expect_end=END)
    return run_schedule_sync(srv.url, [batch], deadline_s=30).records


def test_complete_stream_is_ok_even_past_the_body_limit() -> None:
    with StreamServer("ok", lines=120) as srv:  # ~1 KB: beyond the kept head of the body
        records = _stream(srv)
    assert srv.connections == 3
    for rec in records:
        assert rec.error is None and rec.status == 200 and rec.body_ok is True, rec
        assert rec.bytes_received > BODY_LIMIT and rec.body.startswith("tick 0\n")
        assert rec.body_tail.endswith(f"{END}: 120 ticks\n") and len(rec.body_tail) <= BODY_TAIL
        assert rec.pod == "pod-s" and verdict.judge(rec).cls == "ok"


@pytest.mark.parametrize(
    ("behaviour", "error", "body_ok"),
    [("cut", "truncated", False), ("reset", "truncated", False), ("no-end", None, False)],
)
def test_stream_not_complete_is_truncated(behaviour: str, error: str | None, body_ok: bool) -> None:
    with StreamServer(behaviour) as srv:
        records = _stream(srv)
    assert srv.connections == 3  # never resent
    for rec in records:
        assert rec.error == error and rec.body_ok is body_ok, (rec.error, rec.error_detail)
        assert "tick 39" in rec.body_tail
        assert verdict.judge(rec).cls == "truncated"


def test_stream_cut_read_against_the_timeline() -> None:
    """A cut stream names queue-proxy: with the app's hint when the user container had just
    exited, with the 'held' hint when queue-proxy was SIGKILLed after the app was gone."""
    with StreamServer("cut", lines=2) as srv:
        rec = _stream(srv, n=1)[0]

    class Ev:
        def __init__(self, name: str, mono: float, detail: str = "") -> None:
            self.name, self.mono, self.detail = name, mono, detail

    end = rec.finished_mono
    j = verdict.diagnose(rec, [Ev("user-container exited", end - 0.3, "exit code 0")])
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["app_cut_stream"])
    held = [
        Ev("user-container exited", end - 40, "exit code 0"),
        Ev("queue-proxy exited", end + 0.2, "exit code 137 after SIGKILL"),
    ]
    j = verdict.diagnose(rec, held)
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["qp_held"])
    assert verdict.diagnose(rec, []).signature == "unknown"


def test_bad_expect_end_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="expect_end: None or a non-empty string"):
        Batch("b", 1, expect_end="")


def test_ksvc_carries_the_stream_timeouts() -> None:
    """On a cluster the configs are revision spec fields (Knative 1.7+); without one the
    response-start timeout is the revision timeout, never Knative's 300 s default."""
    from pytest_knative_drain.platforms.cluster.api import ClusterError
    from pytest_knative_drain.platforms.cluster.ksvc import KsvcSpec, render_ksvc

    spec = KsvcSpec("drain-go", "img", timeout_seconds=120, response_start_timeout_seconds=10)
    revision = render_ksvc(spec, "ns")["spec"]["template"]["spec"]
    assert revision["timeoutSeconds"] == 120 and revision["responseStartTimeoutSeconds"] == 10
    assert "idleTimeoutSeconds" not in revision
    plain = render_ksvc(KsvcSpec("drain-go", "img", timeout_seconds=600), "ns")["spec"]
    plain = plain["template"]["spec"]
    assert set(plain) == {
        "timeoutSeconds",
        "responseStartTimeoutSeconds",
        "containerConcurrency",
        "containers",
    }
    assert plain["responseStartTimeoutSeconds"] == plain["timeoutSeconds"] == 600
    with pytest.raises(ClusterError, match="idle_timeout_seconds=-1: None or a whole number"):
        render_ksvc(KsvcSpec("drain-go", "img", idle_timeout_seconds=-1), "ns")
