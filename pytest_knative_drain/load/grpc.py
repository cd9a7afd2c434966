"""gRPC load over cleartext HTTP/2 (h2c): unary and server-streaming calls at their offsets.

Why the ``h2`` library and not grpcio: the verdict has to say which component cut a call,
and grpc's C core keeps none of what says it. A proxy's HTTP error instead of a gRPC answer
(queue-proxy's 502 ``EOF``, Envoy's 503 ``upstream connect error``) reaches a grpcio client
as "Received http2 header with status: 502", without its body or its Server header
(measured: grpcio 1.68, empty initial and trailing metadata); a reset stream and a GOAWAY
are folded into UNAVAILABLE or UNKNOWN "Stream removed". ``h2`` (python-hyper) does the
HTTP/2 framing, flow control, SETTINGS and PING; this module writes the gRPC parts on top
(request headers, the 5-byte message prefix, reading ``grpc-status`` from the trailers):
about sixty lines, against the fixture apps' real grpc-go and grpcio servers in the tests.

One connection per call, as separate clients (Envoy balances calls per stream, queue-proxy
has one app behind it), one ``RequestRecord`` per call (``kind="grpc"``), never retried.
The service is the fixture apps' ``knativedrain.v1.Drain`` (fixtures/apps/_src/go/contract/
drain.proto), whose messages are protobuf well-known wrappers: ``Sleep`` answers once after
``duration_s``; ``Stream`` sends "tick <n>" each second and ends with a message starting
"stream complete". A stream that ended OK without that message is ``grpc_incomplete``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from google.protobuf import wrappers_pb2

from .http1 import parse_url
from .plan import Event, ScheduleResult
from .records import BODY_LIMIT, POD_HEADER, REVISION_HEADER, RequestRecord
from .sessions import Clock, check_deadline, fail, run_sessions, run_sync

SERVICE = "knativedrain.v1.Drain"
METHODS = ("unary", "stream")
STREAM_END = "stream complete"
USER_AGENT = "pytest-knative-drain grpc"
CONNECT_LEAD_S = 1.0  # connections open this long before their calls' instant
#: grpc-status codes with a class of their own (the others are "grpc_status")
_STATUS_CLASSES = {
    14: "grpc_unavailable",
    13: "grpc_internal",
    1: "grpc_cancelled",
    4: "grpc_deadline",
}
STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


@dataclass
class Calls:
    """``calls`` gRPC calls started ``at_s`` after schedule start, each on its own connection.

    ``method`` "unary" calls ``Sleep`` (answered after ``duration_s``); "stream" calls
    ``Stream`` (a message a second for ``duration_s``, then the final one). ``deadline_s``
    is the call's gRPC deadline; None leaves only the schedule's bound.
    """

    name: str
    calls: int
    at_s: float = 0.0
    method: str = "unary"
    duration_s: float = 10.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Calls name: a non-empty string is required, got {self.name!r}")
        if isinstance(self.calls, bool) or not isinstance(self.calls, int) or self.calls < 0:
            raise ValueError(f"Calls {self.name!r} calls: an integer >= 0, got {self.calls!r}")
        if self.method not in METHODS:
            raise ValueError(
                f"Calls {self.name!r} method: one of {', '.join(METHODS)}, got {self.method!r}"
            )
        for field_name, low in (("at_s", 0.0), ("duration_s", 0.0)):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise ValueError(f"Calls {self.name!r} {field_name}: seconds >= 0, got {value!r}")
        d = self.deadline_s
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or d <= 0):
            raise ValueError(f"Calls {self.name!r} deadline_s: None or seconds > 0, got {d!r}")


class _H2Connection(h2.connection.H2Connection):
    """h2 closes the whole connection on any GOAWAY (h2 4.x: only GOAWAY is accepted after
    it, so the PING and DATA that follow raise ProtocolError). RFC 9113 section 6.8 lets the
    streams up to the GOAWAY's last stream id complete, and that is how a gRPC server drains
    (grpc-go GracefulStop, grpcio stop(grace): GOAWAY, PING, then the calls in flight end):
    the connection stays open while such a stream is."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        frames, events = super()._receive_goaway_frame(frame)
        if any(sid <= frame.last_stream_id for sid in self.streams):
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class _Gate:
    """The calls due at one instant, written in one loop at it, as the HTTP engine writes
    its batches: 2,000 connections opened at the instant itself skewed the starts by
    0.4-0.7 s, and 2,000 coroutines each waking to write still by 0.3-0.6 s
    (benchmarks/results/grpc-2000x10s-first.json, -connect-ahead.json)."""

    def __init__(self, instant: float, clock: Clock) -> None:
        loop = asyncio.get_running_loop()
        self.clock = clock
        self.waiting: list[tuple[asyncio.StreamWriter, bytes, RequestRecord]] = []
        self.opened: asyncio.Future[None] = loop.create_future()
        loop.call_at(instant, self._open)  # the loop's clock is time.monotonic

    async def send(self, writer: asyncio.StreamWriter, data: bytes, rec: RequestRecord) -> None:
        """Write ``data`` at the instant (at once when the instant has passed)."""
        if self.opened.done():
            self._write(writer, data, rec)
            return
        self.waiting.append((writer, data, rec))
        await self.opened

    def _open(self) -> None:
        for writer, data, rec in self.waiting:
            self._write(writer, data, rec)
        self.waiting.clear()
        if not self.opened.done():
            self.opened.set_result(None)

    def _write(self, writer: asyncio.StreamWriter, data: bytes, rec: RequestRecord) -> None:
        if not writer.is_closing():
            writer.write(data)
        rec.sent_mono, rec.sent_wall = self.clock.stamp()


def status_class(code: int) -> str:
    """The class of a call that ended with grpc-status ``code`` (not 0)."""
    return _STATUS_CLASSES.get(code, "grpc_status")


class _Call:
    """What one call's stream has shown so far (fed by h2 events)."""

    def __init__(self, rec: RequestRecord, clock: Clock) -> None:
        self.rec, self.clock = rec, clock
        self.grpc_answer = False  # :status 200 with a gRPC content type
        self.buffer = b""  # gRPC message bytes not yet parsed
        self.last = ""  # the last message read
        self.http_body = b""  # the body of an HTTP answer that was not gRPC
        self.grpc_status: int | None = None
        self.grpc_message = ""
        self.reset_code: str | None = None
        self.goaway: str | None = None
        self.ended = False

    def headers(self, headers: Sequence[tuple[bytes, bytes]], end: bool) -> None:
        rec = self.rec
        fields = {k.decode().lower(): v.decode("utf-8", "replace") for k, v in headers}
        if rec.headers_mono is None and ":status" in fields:
            rec.headers_mono, rec.headers_wall = self.clock.stamp()
            rec.status = int(fields[":status"])
            rec.pod = fields.get(POD_HEADER)
            rec.revision = fields.get(REVISION_HEADER)
            rec.server = fields.get("server")
            kind = fields.get("content-type", "")
            self.grpc_answer = rec.status == 200 and kind.startswith("application/grpc")
        if "grpc-status" in fields:  # the trailers, or a trailers-only answer
            self.grpc_status = int(fields["grpc-status"])
            self.grpc_message = unquote(fields.get("grpc-message", ""))

    def data(self, data: bytes) -> None:
        if not self.grpc_answer:
            self.http_body = (self.http_body + data)[:BODY_LIMIT]
            return
        self.buffer += data
        while len(self.buffer) >= 5:
            _, size = struct.unpack(">BI", self.buffer[:5])
            if len(self.buffer) < 5 + size:
                return
            message, self.buffer = self.buffer[5 : 5 + size], self.buffer[5 + size :]
            self.last = wrappers_pb2.StringValue.FromString(message).value
            self.rec.messages_received += 1
            self.rec.bytes_received += size

    def finish(self, method: str, lost: str | None) -> None:
        """Judge nothing, record everything: the error class and its detail."""
        rec, clock = self.rec, self.clock
        rec.body = rec.body_tail = self.last[:BODY_LIMIT] if self.grpc_answer else ""
        if self.grpc_status is not None:
            rec.grpc_status = STATUS_NAMES.get(self.grpc_status, str(self.grpc_status))
            rec.grpc_message = self.grpc_message[:BODY_LIMIT]
        if rec.status is not None and not self.grpc_answer:
            rec.body = self.http_body.decode("utf-8", "replace")
            rec.bytes_received = len(self.http_body)
            fail(rec, clock, "grpc_http_status", f"HTTP {rec.status} instead of a gRPC answer")
        elif self.reset_code is not None:
            fail(rec, clock, "grpc_rst_stream", f"RST_STREAM {self.reset_code} {self._after()}")
        elif self.grpc_status is not None and self.grpc_status != 0:
            detail = f"{rec.grpc_status}: {self.grpc_message} {self._after()}"
            fail(rec, clock, status_class(self.grpc_status), detail)
        elif self.grpc_status == 0 and self.ended:
            rec.finished_mono, rec.finished_wall = clock.stamp()
            if method == "stream" and not self.last.startswith(STREAM_END):
                rec.error = "grpc_incomplete"
                rec.error_detail = f"status OK {self._after()}, none of them the final one"
            rec.body_ok = rec.error is None
        elif self.goaway is not None:
            fail(rec, clock, "grpc_goaway", f"GOAWAY {self.goaway}; {lost} {self._after()}")
        elif rec.status is None:
            fail(rec, clock, "reset" if lost == "reset" else "empty_reply", f"{lost}, no answer")
        else:
            fail(rec, clock, "grpc_cut", f"{lost} {self._after()}, no grpc-status")

    def _after(self) -> str:
        return f"after {self.rec.messages_received} messages"


async def _call(
    rec: RequestRecord,
    spec: Calls,
    host: str,
    port: int,
    authority: str,
    clock: Clock,
    gate: _Gate,
) -> None:
    """One call on its own connection: connected ahead (the HTTP/2 preface and SETTINGS
    sent), the call written with the others due at its instant (``gate``), then read to
    its trailers; every outcome in ``rec``."""
    rec.sent_mono, rec.sent_wall = clock.stamp()  # the connect; the call's send comes later
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError as exc:
        fail(rec, clock, "refused", f"connect: {exc}")
        return
    except OSError as exc:
        fail(rec, clock, "reset", f"connect: {type(exc).__name__}: {exc}")
        return
    call = _Call(rec, clock)
    try:
        conn = _H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        sid = _request(conn, spec, authority)  # encoded now, written at the instant
        await gate.send(writer, conn.data_to_send(), rec)
        exchange = _exchange(call, conn, sid, spec, reader, writer)
        if spec.deadline_s is None:
            await exchange
        else:
            await asyncio.wait_for(exchange, spec.deadline_s)
    except TimeoutError:
        fail(rec, clock, "grpc_deadline", f"no answer within the call's {spec.deadline_s:g} s")
    finally:
        writer.close()


def _request(conn: _H2Connection, spec: Calls, authority: str) -> int:
    """The call's HEADERS and DATA, encoded into ``conn``'s outbound buffer; its stream id."""
    sid = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"/{SERVICE}/{'Sleep' if spec.method == 'unary' else 'Stream'}"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", USER_AGENT),
    ]
    if spec.deadline_s is not None:
        headers.append(("grpc-timeout", f"{max(1, int(spec.deadline_s * 1000))}m"))
    request = wrappers_pb2.Int64Value(value=int(spec.duration_s * 1000)).SerializeToString()
    conn.send_headers(sid, headers)
    conn.send_data(sid, struct.pack(">BI", 0, len(request)) + request, end_stream=True)
    return sid


async def _exchange(
    call: _Call,
    conn: _H2Connection,
    sid: int,
    spec: Calls,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    lost = "connection closed"
    try:
        await writer.drain()
        while not call.ended and call.reset_code is None:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                _on_event(call, conn, sid, event)
            writer.write(conn.data_to_send())
    except ConnectionResetError as exc:
        lost = "reset"
        call.grpc_message = call.grpc_message or str(exc)
    except h2.exceptions.ProtocolError as exc:
        lost = f"HTTP/2 protocol error: {exc}"
    call.finish(spec.method, lost)


def _on_event(call: _Call, conn: h2.connection.H2Connection, sid: int, event: Any) -> None:
    if getattr(event, "stream_id", sid) != sid:
        return
    if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
        call.headers(event.headers, bool(event.stream_ended))
    elif isinstance(event, h2.events.DataReceived):
        conn.acknowledge_received_data(event.flow_controlled_length, sid)
        call.data(event.data)
    elif isinstance(event, h2.events.StreamEnded):
        call.ended = True
    elif isinstance(event, h2.events.StreamReset):
        call.reset_code = _code_name(event.error_code)
    elif isinstance(event, h2.events.ConnectionTerminated):
        call.goaway = f"{_code_name(event.error_code)} (last stream {event.last_stream_id})"


def _code_name(code: Any) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


async def run_grpc_schedule(
    url: str,
    calls: Sequence[Calls],
    events: Sequence[Event] = (),
    *,
    headers: Mapping[str, str] | None = None,
    deadline_s: float | None = None,
) -> ScheduleResult:
    """Start the calls and run the events at their offsets; one record per call.

    ``url`` is the http:// address of the target (queue-proxy, an ingress); a "Host" entry in
    ``headers`` becomes the calls' ``:authority`` (Knative ingress routing), while the
    connection still goes to ``url``'s host and port. ``deadline_s`` bounds the whole call:
    a call still open then is recorded as "timeout".
    """
    target = parse_url(url)
    if target.tls:
        raise ValueError(f"gRPC load: h2c needs an http:// target, got {url!r}")
    check_deadline(deadline_s)
    calls = list(calls)
    for c in calls:
        if not isinstance(c, Calls):
            raise ValueError(f"calls: Calls objects are required, got {c!r}")
    authority = next((v for k, v in (headers or {}).items() if k.lower() == "host"), None)
    clock = Clock()
    records: list[RequestRecord] = []
    specs: dict[int, Calls] = {}
    for c in calls:
        for _ in range(c.calls):
            rec = RequestRecord(
                id=len(records), batch=c.name, url=url, kind="grpc", planned_at=float(c.at_s)
            )
            specs[rec.id] = c
            records.append(rec)

    gates: dict[float, _Gate] = {}

    def start(rec: RequestRecord, instant: float) -> Any:
        gate = gates.get(instant) or gates.setdefault(instant, _Gate(instant, clock))
        host, port = target.host, target.port
        return _call(rec, specs[rec.id], host, port, authority or target.authority, clock, gate)

    return await run_sessions(records, start, events, clock, deadline_s, lead_s=CONNECT_LEAD_S)


def run_grpc_schedule_sync(
    url: str,
    calls: Sequence[Calls],
    events: Sequence[Event] = (),
    **kw: Any,
) -> ScheduleResult:
    """``run_grpc_schedule`` for callers without an event loop (the runner, tests)."""
    return run_sync(run_grpc_schedule(url, calls, events, **kw), "run_grpc_schedule_sync")
