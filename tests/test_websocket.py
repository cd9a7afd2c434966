"""The websocket load (load/websocket.py) against real loopback websocket servers that misbehave.

Each way a session can end is produced on a real socket by a ``websockets`` server: a
close 1000 after echoing everything, a connection dropped without a close frame (1006),
a TCP reset, a refused upgrade, another close code, messages swallowed before a 1000, a
server that never closes. The records and the verdict's class, signature and hint are
asserted exactly; the server counts sessions, which proves none was retried.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from http import HTTPStatus
from typing import Any

import pytest
from misbehaving_servers import Relay
from websockets.asyncio.server import ServerConnection, serve

from pytest_knative_drain.load import Event
from pytest_knative_drain.load.websocket import Sessions, run_ws_schedule_sync
from pytest_knative_drain.run import verdict

_LINGER_0 = struct.pack("ii", 1, 0)


class WebsocketServer:
    """A websockets server on 127.0.0.1:<ephemeral> in its own thread and loop.

    ``behaviour``: "echo" (echo; close 1000 when ``term`` is set, like a draining app),
    "drop" (after 2 echoes end the TCP connection with no close frame), "reset" (after 2
    echoes, RST), "refuse" (answer the upgrade 503), "close-1011" (after 2 echoes close
    1011), "swallow" (echo 2, read but never answer the third, close 1000 after 2 s),
    "crossed" (echo; once ``term`` is set, close 1000 on the next message instead of
    echoing it: the client wrote it as the close frame was on its way).
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sessions = 0
        self.hosts: list[str] = []
        self.term = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> WebsocketServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()

        def refuse(connection: ServerConnection, request: Any) -> Any:
            self.hosts.append(request.headers.get("Host", ""))
            if self.behaviour == "refuse":
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
            return None

        async with serve(
            self._handler, "127.0.0.1", 0, process_request=refuse, compression=None
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handler(self, ws: ServerConnection) -> None:
        self.sessions += 1
        echoed = 0
        while True:
            if self.behaviour == "echo" and self.term.is_set():
                await ws.close(1000, "server shutting down")
                return
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=0.1)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - the client went away
                return
            if self.behaviour == "crossed" and self.term.is_set():
                await ws.close(1000, "server shutting down")
                return
            if self.behaviour == "swallow" and echoed == 2:
                await asyncio.sleep(2)
                await ws.close(1000)
                return
            await ws.send(msg)
            echoed += 1
            if echoed == 2 and self.behaviour in ("drop", "reset", "close-1011"):
                await self._end(ws)
                return

    async def _end(self, ws: ServerConnection) -> None:
        if self.behaviour == "close-1011":
            await ws.close(1011, "internal error")
            return
        sock = ws.transport.get_extra_info("socket")
        if self.behaviour == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        ws.transport.abort()


def _run(srv: WebsocketServer, n: int = 3, **kw: Any) -> list[Any]:
    kw.setdefault("deadline_s", 30)
    sessions = [Sessions("s", n, interval_s=0.2, hold_s=kw.pop("hold_s", 10))]
    return run_ws_schedule_sync(srv.url, sessions, kw.pop("events", ()), **kw).records


def test_clean_close_1000_after_every_echo_is_ok() -> None:
    with WebsocketServer("echo") as srv:
        records = _run(srv, events=[Event("term", 1.0, srv.term.set)])
    assert srv.sessions == 3
    for rec in records:
        assert rec.kind == "websocket" and rec.status == 101
        assert rec.error is None and rec.close_code == 1000, rec
        assert rec.close_reason == "server shutting down"
        assert rec.headers_mono < rec.close_frame_mono <= rec.finished_mono
        assert rec.messages_sent >= 4 and rec.messages_answered == rec.messages_sent
        assert verdict.judge(rec).cls == "ok"
    assert verdict.summarize(records).strict_sli == 1.0


@pytest.mark.parametrize(
    ("behaviour", "cls"),
    [
        ("drop", "ws_abnormal_close"),
        ("reset", "ws_reset"),
        ("close-1011", "ws_close_code"),
        ("swallow", "ws_unanswered"),
    ],
)
def test_each_bad_ending_has_its_class(behaviour: str, cls: str) -> None:
    with WebsocketServer(behaviour) as srv:
        records = _run(srv)
    assert srv.sessions == 3  # one session each, never retried
    for rec in records:
        assert rec.error == cls, (rec.error, rec.error_detail)
        j = verdict.judge(rec)
        assert j.cls == cls and j.signature == "unknown" and j.hint
    if cls == "ws_close_code":
        assert {r.close_code for r in records} == {1011}
    if cls in ("ws_abnormal_close", "ws_reset"):
        assert {r.close_code for r in records} == {None}
        assert {r.messages_answered for r in records} == {2}
    summary = verdict.summarize(records)
    assert summary.strict_sli == 0.0 and summary.classes == {cls: 3}


@pytest.mark.parametrize(("behaviour", "cls"), [("crossed", None), ("swallow", "ws_unanswered")])
def test_a_message_crossing_the_close_frame_is_judged_by_the_frame_not_the_tcp_close(
    behaviour: str, cls: str | None
) -> None:
    """Behind a relay whose TCP close trails the close frame by 1.5 s (an ingress), a
    message written just before the close frame arrived crossed it and is not lost; a
    message the server read and never answered for 2 s still is (the broken twin). Timed
    from the TCP close, the crossed message was counted unanswered: the 4-of-20 failure of
    websocket-long on kind 1.23 (evidence/2026-12-05-kind-1.23)."""
    with WebsocketServer(behaviour) as srv:
        relay = Relay(srv.port, lag_s=1.5)
        try:
            sessions = [Sessions("s", 3, interval_s=0.2, hold_s=10)]
            events = [Event("term", 1.0, srv.term.set)] if behaviour == "crossed" else []
            records = run_ws_schedule_sync(relay.url, sessions, events, deadline_s=30).records
        finally:
            relay.stop()
    assert srv.sessions == 3
    for rec in records:
        assert rec.close_code == 1000 and rec.error == cls, (rec.error, rec.error_detail)
        assert rec.messages_sent == rec.messages_answered + 1  # one message never echoed
        assert rec.finished_mono - rec.close_frame_mono > 1.4  # the TCP close did trail
        assert verdict.judge(rec).cls == (cls or "ok")
        if cls:  # swallowed 2 s before the close frame: timed from the frame, not the TCP end
            assert 1.9 < float(re.search(r"last written ([\d.]+) s", rec.error_detail)[1]) < 2.5


def test_refused_upgrade_keeps_the_answer() -> None:
    with WebsocketServer("refuse") as srv:
        records = _run(srv, n=2)
    for rec in records:
        assert rec.error == "ws_handshake_refused" and rec.status == 503
        assert "shutting down" in rec.body and rec.messages_sent == 0
        assert verdict.judge(rec).cls == "ws_handshake_refused"


def test_server_that_never_closes_is_a_timeout_at_the_hold() -> None:
    with WebsocketServer("echo") as srv:
        records = _run(srv, n=2, hold_s=1.0)
    for rec in records:
        assert rec.error == "timeout" and "did not close" in rec.error_detail
        assert verdict.judge(rec).hint == verdict.HINTS["ws_timeout"]


def test_a_planned_client_close_is_ok_when_the_server_answers_it() -> None:
    """activator-delete-websocket: the app is not terminating, so the client ends each
    session at its hold; ok when every message was echoed and the close answered 1000.
    A server that swallows a message is still caught (its echo never came)."""
    with WebsocketServer("echo") as srv:
        sessions = [Sessions("s", 2, interval_s=0.2, hold_s=1.0, client_closes=True)]
        records = run_ws_schedule_sync(srv.url, sessions, deadline_s=30).records
    for rec in records:
        assert rec.error is None and rec.close_code == 1000, (rec.error, rec.error_detail)
        assert rec.messages_sent >= 4 and rec.messages_answered == rec.messages_sent
    with WebsocketServer("swallow") as srv:
        sessions = [Sessions("s", 2, interval_s=0.2, hold_s=1.0, client_closes=True)]
        records = run_ws_schedule_sync(srv.url, sessions, deadline_s=30).records
    assert {r.error for r in records} <= {"timeout", "ws_unanswered"}, records


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused
        result = run_ws_schedule_sync(
            f"http://127.0.0.1:{port}", [Sessions("s", 2)], deadline_s=10
        ).records
    assert {r.error for r in result} == {"refused"}


def test_cut_is_put_down_to_queue_proxy_exit_or_the_app_by_the_timeline() -> None:
    """A 1006 read against pod events: queue-proxy exiting with the app still running is
    queue-proxy's (Knative's hijacked-connection bug); the app exiting just before is the
    app's, passed on by queue-proxy."""
    with WebsocketServer("drop") as srv:
        rec = _run(srv, n=1)[0]

    class Ev:
        def __init__(self, name: str, mono: float, detail: str = "") -> None:
            self.name, self.mono, self.detail = name, mono, detail

    end = rec.finished_mono
    qp_first = [Ev("queue-proxy exited", end - 0.1, "exit code 0")]
    j = verdict.diagnose(rec, qp_first)
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["qp_exited_ws"])
    app_first = [Ev("user-container exited", end - 0.2, "exit code 0")]
    j = verdict.diagnose(rec, app_first)
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["app_cut_ws"])
    assert verdict.diagnose(rec, []).signature == "unknown"


def test_bad_sessions_spec_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="hold_s: seconds > 0"):
        Sessions("s", 1, hold_s=0)
    with pytest.raises(ValueError, match="connections: an integer >= 0"):
        Sessions("s", -1)


def test_host_header_names_the_virtual_host_behind_an_ingress() -> None:
    """--platform=kind/existing: the session goes to the ingress with the ksvc's Host."""
    with WebsocketServer("echo") as srv:
        sessions = [Sessions("s", 1, interval_s=0.2, hold_s=10)]
        records = run_ws_schedule_sync(
            srv.url,
            sessions,
            [Event("term", 0.5, srv.term.set)],
            headers={"Host": "drain-go.ns.example.com", "X-Extra": "1"},
            deadline_s=30,
        ).records
    assert srv.hosts == ["drain-go.ns.example.com"]
    assert records[0].error is None and records[0].close_code == 1000
