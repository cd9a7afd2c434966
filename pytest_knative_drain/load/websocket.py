"""Websocket load: sessions opened at their offsets, one echoed message per interval each.

Why its own module: a websocket session is not a request. It lives until the server
closes it, and what matters is how it ends: a close frame 1000 from the app (a clean
drain), another code, no close frame at all (1006: the connection just ended), a TCP
reset, or an upgrade that was refused. Framing and the close handshake are the
``websockets`` library's (no hand-written framing); this module only schedules sessions,
times them on the load engine's clock, and writes one ``RequestRecord`` per session
(``kind="websocket"``), never retried.

A message the client wrote just before the server's close frame arrived crossed it on the
wire: RFC 6455 forbids the server to send data after its close frame, so such a message
(written less than ``CROSS_S`` before the close frame arrived) is not counted as
unanswered. The close frame's own arrival is the mark, not the end of the TCP connection:
behind an ingress the TCP close trails the close frame by a second or more (measured on
kind, Kourier 1.21 and queue-proxy 1.23), which made a crossed message look unanswered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Opcode

from .http1 import parse_url
from .plan import Event, ScheduleResult
from .records import POD_HEADER, REVISION_HEADER, RequestRecord
from .sessions import Clock, check_deadline, fail, run_sessions, run_sync

CROSS_S = 0.5  # a message written this close before the server's close frame crossed it
CLOSE_TIMEOUT_S = 10.0  # how long the client waits for the TCP close after a close frame
_mono = time.monotonic


@dataclass
class Sessions:
    """``connections`` websocket sessions to ``path`` opened ``at_s`` after schedule start.

    Each writes one text message every ``interval_s`` and waits for its echo, until the
    server closes the session; a session the server has not closed ``hold_s`` after it
    opened is closed by the client and recorded as "timeout" (the app never closed it).
    With ``client_closes`` the client's close at ``hold_s`` is the session's planned end
    (the app is not terminating there, an activator is): ok when every message was answered
    and the server answered the close with 1000.
    """

    name: str
    connections: int
    at_s: float = 0.0
    path: str = "/ws"
    interval_s: float = 1.0
    hold_s: float = 60.0
    client_closes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Sessions name: a non-empty string is required, got {self.name!r}")
        if isinstance(self.connections, bool) or not isinstance(self.connections, int):
            raise ValueError(
                f"Sessions {self.name!r} connections: an integer >= 0, got {self.connections!r}"
            )
        if self.connections < 0:
            raise ValueError(
                f"Sessions {self.name!r} connections: an integer >= 0, got {self.connections}"
            )
        for field_name in ("at_s", "interval_s", "hold_s"):
            value = getattr(self, field_name)
            low_ok = value >= 0 if field_name == "at_s" else value > 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_ok:
                raise ValueError(
                    f"Sessions {self.name!r} {field_name}: seconds "
                    f"{'>= 0' if field_name == 'at_s' else '> 0'}, got {value!r}"
                )
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"Sessions {self.name!r} path: must start with '/', got {self.path!r}")


class _Connection(ClientConnection):
    """Keeps when the server's close frame arrived, and how the TCP connection ended (a
    reset is told apart from a plain close)."""

    lost_exc: BaseException | None = None
    close_frame_mono: float | None = None

    def process_event(self, event: Any) -> None:
        if self.close_frame_mono is None and getattr(event, "opcode", None) is Opcode.CLOSE:
            self.close_frame_mono = _mono()
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        super().connection_lost(exc)


async def _session(
    rec: RequestRecord,
    spec: Sessions,
    uri: str,
    connect_kw: dict[str, Any],
    clock: Clock,
) -> None:
    """One websocket session from upgrade to close; every outcome lands in ``rec``."""
    rec.kind = "websocket"
    rec.sent_mono, rec.sent_wall = clock.stamp()
    try:
        ws = await connect(uri, **connect_kw)
    except InvalidStatus as exc:
        rec.status = exc.response.status_code
        rec.headers_mono, rec.headers_wall = clock.stamp()
        _headers(rec, exc.response.headers)
        rec.body = (exc.response.body or b"")[:512].decode("utf-8", "replace")
        fail(rec, clock, "ws_handshake_refused", f"upgrade answered {rec.status}, not 101")
        return
    except ConnectionRefusedError as exc:
        fail(rec, clock, "refused", f"connect: {type(exc).__name__}: {exc}")
        return
    except ConnectionResetError as exc:
        fail(rec, clock, "reset", f"upgrade: {type(exc).__name__}: {exc}")
        return
    except TimeoutError:
        fail(rec, clock, "timeout", f"no upgrade answer within {connect_kw['open_timeout']} s")
        return
    except (InvalidHandshake, EOFError, OSError) as exc:
        # closed before any answer, a malformed answer, a 101 without the right headers
        detail = f"upgrade: {type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, EOFError) or isinstance(exc, EOFError):
            fail(rec, clock, "empty_reply", detail)
        else:
            fail(rec, clock, "ws_handshake_refused", detail)
        return
    rec.status = 101
    rec.headers_mono, rec.headers_wall = clock.stamp()
    _headers(rec, ws.response.headers if ws.response is not None else {})
    await _exchange(rec, spec, ws, clock)


async def _exchange(rec: RequestRecord, spec: Sessions, ws: Any, clock: Clock) -> None:
    opened = _mono()
    closed = asyncio.ensure_future(ws.wait_closed())
    written: list[float] = []  # when each unanswered message was written
    k = 0
    gave_up = False
    try:
        while not closed.done():
            if _mono() - opened >= spec.hold_s:
                gave_up = True
                break
            msg = f"{rec.id}:{k}"
            try:
                await ws.send(msg)
                written.append(_mono())
                rec.messages_sent += 1
                left = spec.hold_s - (_mono() - opened)
                reply = await asyncio.wait_for(ws.recv(), timeout=max(left, 0.001))
            except ConnectionClosed:
                break
            except TimeoutError:
                gave_up = True
                break
            if reply == msg:
                rec.messages_answered += 1
                written.pop()
            k += 1
            pause = opened + k * spec.interval_s - _mono()
            if pause > 0:
                await asyncio.wait([closed], timeout=pause)
        if gave_up:
            await ws.close(1000, "client hold time over")
        await closed
    finally:
        closed.cancel()
    rec.finished_mono, rec.finished_wall = clock.stamp()
    rec.close_frame_mono = getattr(ws, "close_frame_mono", None)
    protocol = ws.protocol
    rcvd = protocol.close_rcvd
    if rcvd is not None:
        rec.close_code, rec.close_reason = rcvd.code, rcvd.reason
    planned_end = spec.client_closes and rcvd is not None and rcvd.code == 1000
    if gave_up and planned_end and rec.messages_answered == rec.messages_sent:
        pass  # the client closed at hold_s as planned, every message answered, 1000 back
    elif gave_up:
        rec.error = "timeout"
        rec.error_detail = f"the server did not close the session within {spec.hold_s:g} s"
    elif rcvd is None:
        lost = getattr(ws, "lost_exc", None)
        if isinstance(lost, ConnectionResetError):
            rec.error, rec.error_detail = "ws_reset", f"{type(lost).__name__}: {lost}"
        else:
            rec.error = "ws_abnormal_close"
            rec.error_detail = "connection ended without a close frame (1006)" + (
                f": {type(lost).__name__}: {lost}" if lost is not None else ""
            )
    elif not protocol.close_rcvd_then_sent:
        rec.error = "ws_abnormal_close"
        rec.error_detail = f"the client closed first, then got {rcvd.code}"
    elif rcvd.code != 1000:
        rec.error = "ws_close_code"
        rec.error_detail = f"closed by the server with {rcvd.code} {rcvd.reason!r}, not 1000"
    else:
        close_at = rec.close_frame_mono or rec.finished_mono
        lost_msgs = [t for t in written if close_at - t > CROSS_S]
        if lost_msgs:
            rec.error = "ws_unanswered"
            rec.error_detail = (
                f"{len(lost_msgs)} of {rec.messages_sent} messages never echoed before the "
                f"server's close 1000 (the last written {close_at - lost_msgs[-1]:.2f} s "
                "before it)"
            )
    rec.body_ok = rec.error is None


def _headers(rec: RequestRecord, headers: Any) -> None:
    rec.pod = headers.get(POD_HEADER)
    rec.revision = headers.get(REVISION_HEADER)
    rec.server = headers.get("server")


async def run_ws_schedule(
    url: str,
    sessions: Sequence[Sessions],
    events: Sequence[Event] = (),
    *,
    headers: Mapping[str, str] | None = None,
    open_timeout_s: float = 10.0,
    deadline_s: float | None = None,
) -> ScheduleResult:
    """Open the sessions and run the events at their offsets; one record per session.

    ``url`` is the http:// address of the target (queue-proxy, an ingress); a "Host" entry
    in ``headers`` names the virtual host (Knative ingress routing), the connection still
    goes to ``url``'s host and port. ``deadline_s`` bounds the whole call: a session still
    open then is recorded as "timeout".
    """
    target = parse_url(url)
    extra = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    authority = next((v for k, v in (headers or {}).items() if k.lower() == "host"), None)
    check_deadline(deadline_s)
    sessions = list(sessions)
    for s in sessions:
        if not isinstance(s, Sessions):
            raise ValueError(f"sessions: Sessions objects are required, got {s!r}")
    records: list[RequestRecord] = []
    for s in sessions:
        for _ in range(s.connections):
            records.append(RequestRecord(id=len(records), batch=s.name, url=url, kind="websocket"))
    clock = Clock()
    starts: dict[int, tuple[Sessions, str, dict[str, Any]]] = {}
    i = 0
    for s in sessions:
        uri = f"ws://{authority or target.authority}{s.path}"
        kw: dict[str, Any] = {
            "host": target.host,
            "port": target.port,
            "additional_headers": extra,
            "open_timeout": open_timeout_s,
            "close_timeout": CLOSE_TIMEOUT_S,
            "ping_interval": None,  # the schedule's own messages are the traffic
            "compression": None,
            "proxy": None,  # never through an HTTP(S)_PROXY of the environment
            "create_connection": _Connection,
        }
        for rec in records[i : i + s.connections]:
            rec.planned_at = float(s.at_s)
            starts[rec.id] = (s, uri, kw)
        i += s.connections
    return await run_sessions(
        records, lambda rec, _at: _session(rec, *starts[rec.id], clock), events, clock, deadline_s
    )


def run_ws_schedule_sync(
    url: str,
    sessions: Sequence[Sessions],
    events: Sequence[Event] = (),
    **kw: Any,
) -> ScheduleResult:
    """``run_ws_schedule`` for callers without an event loop (the runner, tests)."""
    return run_sync(run_ws_schedule(url, sessions, events, **kw), "run_ws_schedule_sync")
