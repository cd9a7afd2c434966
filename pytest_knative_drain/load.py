"""Long-request load engine: fire scheduled batches of HTTP/1.1 requests, record raw facts.

Why its own client: the gate must see every failure exactly once. aiohttp silently
resends an idempotent GET after a server disconnect and has a 300 s default total
timeout; httpx needed 95 s wall for 3,000 concurrent 15 s requests. This engine is
h11 (sans-IO HTTP/1.1) over a lean asyncio protocol with no retries and no pool: one
connection per request with ``Connection: close`` unless reuse is asked.

Start skew is kept low with connect-ahead: a batch's connections are opened
``connect_lead_s`` before its instant, then every request is written in one tight
loop at the instant. Every planned request leaves exactly one ``RequestRecord``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import resource
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11

from .records import BODY_LIMIT, POD_HEADER, REVISION_HEADER, RequestRecord

CONNECT_PARALLEL = 256  # connects in flight at once: keeps the server's accept queue sane
FD_RESERVE = 64  # descriptors kept free for the interpreter, logs, event actions
# A burst of thousands of connections allocates long-lived objects that trigger ~160
# young and a full garbage collection: 12% of the engine's CPU. A higher young-generation
# threshold while a schedule runs cuts that to 2%; the old threshold is restored after.
GC_GEN0_THRESHOLD = 20000
USER_AGENT = "pytest-knative-drain"

_POD = POD_HEADER.encode()
_REVISION = REVISION_HEADER.encode()
_CUT = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass
class Batch:
    """``requests`` GETs of ``path`` due ``at_s`` seconds after schedule start.

    ``concurrency`` None sends all at once; otherwise that many slots each send
    their share one after another. ``path`` "/" keeps the URL's own path and query;
    any other value (may hold a query, e.g. "/?sleep=300000") replaces them.
    """

    name: str
    requests: int
    at_s: float = 0.0
    path: str = "/"
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Batch name: a non-empty string is required, got {self.name!r}")
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise ValueError(
                f"Batch {self.name!r} requests: an integer >= 0, got {self.requests!r}"
            )
        if self.requests < 0:
            raise ValueError(f"Batch {self.name!r} requests: an integer >= 0, got {self.requests}")
        if not isinstance(self.at_s, (int, float)) or self.at_s < 0:
            raise ValueError(f"Batch {self.name!r} at_s: seconds >= 0, got {self.at_s!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"Batch {self.name!r} path: must start with '/', got {self.path!r}")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ValueError(
                f"Batch {self.name!r} concurrency: None (all at once) or an integer >= 1, "
                f"got {self.concurrency!r}"
            )

    @property
    def slots(self) -> int:
        """Connections this batch holds at once."""
        if self.concurrency is None:
            return self.requests
        return min(self.concurrency, self.requests)


@dataclass
class Event:
    """A blocking action (docker stop, kubectl delete ...) run off-loop ``at_s`` after start."""

    name: str
    at_s: float
    action: Callable[[], object]

    def __post_init__(self) -> None:
        if not isinstance(self.at_s, (int, float)) or self.at_s < 0:
            raise ValueError(f"Event {self.name!r} at_s: seconds >= 0, got {self.at_s!r}")
        if not callable(self.action):
            raise ValueError(f"Event {self.name!r} action: a callable is required")


@dataclass
class EventRecord:
    """When an event's action really ran, and how it ended."""

    name: str
    planned_at: float
    started_mono: float | None = None
    started_wall: float | None = None
    finished_mono: float | None = None
    finished_wall: float | None = None
    error: str | None = None  # "Type: text" of the exception, or the deadline note
    result: str | None = None  # repr of the return value, shortened

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScheduleResult:
    """All records of one schedule: one ``RequestRecord`` per planned request, by id."""

    records: list[RequestRecord]
    events: list[EventRecord]
    started_mono: float
    started_wall: float
    planned: int
    finished_mono: float | None = None
    finished_wall: float | None = None

    def start_skew_s(self, batch: str | None = None) -> float | None:
        """Seconds between the first and the last request written (in one batch if named)."""
        sent = [
            r.sent_mono
            for r in self.records
            if r.sent_mono is not None and (batch is None or r.batch == batch)
        ]
        return max(sent) - min(sent) if sent else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "started_mono": self.started_mono,
            "started_wall": self.started_wall,
            "finished_mono": self.finished_mono,
            "finished_wall": self.finished_wall,
            "records": [r.to_dict() for r in self.records],
            "events": [e.to_dict() for e in self.events],
        }


@dataclass(frozen=True)
class _Target:
    host: str  # what to connect to
    port: int
    authority: str  # default Host header
    path: str  # path?query of the URL


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str):
        raise ValueError(f"url: an http://host[:port]/path URL is required, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"url: only http://host[:port]/path URLs are supported, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"url: bad port in {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.hostname, port, parts.netloc.rpartition("@")[2], path)


def _ensure_fds(needed: int) -> None:
    """Raise the soft fd limit to the hard one when the schedule needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + FD_RESERVE
    if want <= soft:
        return
    if hard != resource.RLIM_INFINITY and want > hard:
        raise ValueError(
            f"requests: the schedule may hold {needed} connections at once but the open-file "
            f"limit (RLIMIT_NOFILE) is {hard}; raise it (ulimit -n) or lower "
            "requests/concurrency"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _now() -> tuple[float, float]:
    return time.monotonic(), time.time()


def _short(value: object, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(rec: RequestRecord, error: str, detail: str) -> None:
    rec.error = error
    rec.error_detail = detail
    rec.finished_mono, rec.finished_wall = _now()


class _Conn(asyncio.Protocol):
    """One connection: a lean asyncio protocol (no StreamReader/Writer) and its h11 state.

    ``read`` behaves as ``StreamReader.read``: data, b"" at EOF, or the socket error
    (ConnectionResetError for an RST) -- enough to tell every failure class apart.
    """

    __slots__ = (
        "transport",
        "h11",
        "payload",
        "written",
        "t_write",
        "_chunks",
        "_eof",
        "_exc",
        "_waiter",
        "_paused",
        "_drained",
        "_lost",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.CLIENT)
        self.payload = b""
        self.written = False
        self.t_write = 0.0
        self._chunks: list[bytes] = []
        self._eof = False
        self._lost = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep our half open: a request may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._exc = exc
        self._eof = True
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while True:
            if self._chunks:
                data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks.clear()
                return data
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def drain(self) -> None:
        if self._paused and not self._lost:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._exc is not None:
            raise self._exc
        if self._lost:
            raise ConnectionResetError("Connection lost")

    def prepare(self, request: h11.Request) -> None:
        self.payload = self.h11.send(request) + self.h11.send(h11.EndOfMessage())
        self.written = False

    def write(self, rec: RequestRecord) -> None:
        """Hand the request to the kernel; ``sent`` is stamped once nothing is left buffered."""
        transport = self.transport
        self.t_write = time.monotonic()
        if transport is None or transport.is_closing():
            return  # peer already gone: the read that follows says how
        transport.write(self.payload)
        self.written = True
        if not transport.get_write_buffer_size():
            rec.sent_mono, rec.sent_wall = _now()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Expiry:
    """A per-request timer that cancels the running task; ``fired`` tells it apart."""

    __slots__ = ("fired", "handle")

    def __init__(self) -> None:
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None


@dataclass
class _BatchRun:
    batch: Batch
    request: h11.Request
    slots: list[list[RequestRecord]]
    go: asyncio.Future[None]
    ready: list[tuple[RequestRecord, _Conn]] | None = field(default_factory=list)


class _Runner:
    def __init__(
        self,
        url: str,
        batches: Sequence[Batch],
        events: Sequence[Event],
        *,
        timeout_s: float | None,
        expect_body: str | None,
        reuse_connections: bool,
        headers: Mapping[str, str] | None,
        connect_lead_s: float,
        deadline_s: float | None,
    ) -> None:
        self.target = _parse_url(url)
        self.url = url
        for name, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name}: None (no limit) or seconds > 0, got {value!r}")
        if not isinstance(connect_lead_s, (int, float)) or connect_lead_s < 0:
            raise ValueError(f"connect_lead_s: seconds >= 0, got {connect_lead_s!r}")
        if expect_body is not None and not isinstance(expect_body, str):
            raise ValueError(f"expect_body: None or a string, got {expect_body!r}")
        batches = list(batches)
        for b in batches:
            if not isinstance(b, Batch):
                raise ValueError(f"batches: Batch objects are required, got {b!r}")
        names = [b.name for b in batches]
        if len(set(names)) != len(names):
            raise ValueError(f"batches: names must be unique, got {names}")
        for e in events:
            if not isinstance(e, Event):
                raise ValueError(f"events: Event objects are required, got {e!r}")
        self.batches = batches
        self.events = list(events)
        self.timeout_s = timeout_s
        self.expect_body = expect_body
        self.reuse = bool(reuse_connections)
        self.lead = float(connect_lead_s)
        self.deadline_s = deadline_s
        self.header_list = self._headers(headers)
        self.deadline_hit = False
        self.records: list[RequestRecord] = []
        for b in batches:
            for _ in range(b.requests):
                self.records.append(RequestRecord(id=len(self.records), batch=b.name, url=url))
        _ensure_fds(sum(b.slots for b in batches))

    def _headers(self, extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
        out = {
            "host": ("Host", self.target.authority),
            "user-agent": ("User-Agent", USER_AGENT),
            "accept": ("Accept", "*/*"),
        }
        for name, value in (extra or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError(f"headers: names and values must be strings, got {name!r}")
            if name.lower() == "connection":
                raise ValueError("headers: 'Connection' is set by reuse_connections")
            out[name.lower()] = (name, value)
        connection = "keep-alive" if self.reuse else "close"
        return [*out.values(), ("Connection", connection)]

    def _request(self, path: str) -> h11.Request:
        target = self.target.path if path == "/" else path
        try:
            return h11.Request(method="GET", target=target, headers=self.header_list)
        except h11.LocalProtocolError as exc:
            raise ValueError(f"headers/path: not a valid HTTP request: {exc}") from None

    async def run(self) -> ScheduleResult:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        self.family, _, _, _, self.addr = infos[0]
        self.sem = asyncio.Semaphore(CONNECT_PARALLEL)
        called = loop.time()  # the deadline counts from here: a hard bound on the call
        # Schedule start leaves the first batch its full connect lead.
        first = min((b.at_s for b in self.batches), default=0.0)
        self.t0 = loop.time() + max(0.05, self.lead - first)
        started_wall = time.time() + (self.t0 - time.monotonic())
        runs: list[_BatchRun] = []
        i = 0
        for b in self.batches:
            recs = self.records[i : i + b.requests]
            i += b.requests
            slots = [recs[k :: b.slots] for k in range(b.slots)] if b.requests else []
            runs.append(_BatchRun(b, self._request(b.path), slots, loop.create_future()))
        event_records = [EventRecord(e.name, float(e.at_s)) for e in self.events]
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(self.events)), thread_name_prefix="drain-event"
        )
        tasks = [asyncio.ensure_future(self._batch(r)) for r in runs]
        tasks += [
            asyncio.ensure_future(self._event(e, rec, executor))
            for e, rec in zip(self.events, event_records, strict=True)
        ]
        try:
            timeout = None
            if self.deadline_s is not None:
                timeout = called + self.deadline_s - loop.time()
            _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else ((), ())
            if pending:
                self.deadline_hit = True
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # an engine bug: never disguise it as a server fault
        finally:
            for t in tasks:
                t.cancel()
            executor.shutdown(wait=False, cancel_futures=True)
        self._account(runs)
        fm, fw = _now()
        return ScheduleResult(
            self.records, event_records, self.t0, started_wall, len(self.records), fm, fw
        )

    def _account(self, runs: list[_BatchRun]) -> None:
        """Every planned request ends with a record; unfinished ones hit the deadline."""
        for run in runs:
            for slot in run.slots:
                for rec in slot:
                    if rec.finished_mono is not None:
                        continue
                    if rec.planned_at is None:
                        rec.planned_at = float(run.batch.at_s)
                    where = "was sent" if rec.sent_mono is None else "completed"
                    _fail(
                        rec,
                        "timeout",
                        f"schedule deadline of {self.deadline_s} s hit before the request {where}",
                    )

    async def _sleep_until(self, offset: float) -> None:
        loop = asyncio.get_running_loop()
        delay = self.t0 + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _batch(self, run: _BatchRun) -> None:
        await self._sleep_until(run.batch.at_s - self.lead)
        slots = [asyncio.ensure_future(self._slot(run, recs)) for recs in run.slots]
        try:
            await self._sleep_until(run.batch.at_s)
            ready, run.ready = run.ready or [], None
            for rec, conn in ready:  # the tight loop that keeps start skew low
                conn.write(rec)
            run.go.set_result(None)
            await asyncio.gather(*slots)
        finally:
            for t in slots:
                t.cancel()
            if slots:
                await asyncio.gather(*slots, return_exceptions=True)

    async def _slot(self, run: _BatchRun, recs: list[RequestRecord]) -> None:
        conn: _Conn | None = None
        try:
            for k, rec in enumerate(recs):
                if k == 0:
                    rec.planned_at = float(run.batch.at_s)
                else:
                    rec.planned_at = asyncio.get_running_loop().time() - self.t0
                if conn is None:
                    conn = await self._open(rec)
                    if conn is None:
                        continue
                conn.prepare(run.request)
                if k == 0 and run.ready is not None:
                    run.ready.append((rec, conn))
                    await run.go
                if not conn.written:
                    conn.write(rec)
                conn = await self._exchange(rec, conn)
        finally:
            if conn is not None:
                conn.close()

    def _arm(self, at: float) -> _Expiry:
        expiry = _Expiry()
        if self.timeout_s is not None:
            task = asyncio.current_task()
            assert task is not None

            def expire() -> None:
                expiry.fired = True
                task.cancel()

            expiry.handle = asyncio.get_running_loop().call_at(at + self.timeout_s, expire)
        return expiry

    def _expired(self, expiry: _Expiry) -> bool:
        """True when our own per-request timer cancelled the task (not the deadline)."""
        if not expiry.fired or self.deadline_hit:
            return False
        task = asyncio.current_task()
        if task is not None and hasattr(task, "uncancel"):
            task.uncancel()
        return True

    async def _open(self, rec: RequestRecord) -> _Conn | None:
        expiry = self._arm(asyncio.get_running_loop().time())
        try:
            async with self.sem:
                conn = _Conn()
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, self.addr[0], self.addr[1], family=self.family
                )
        except asyncio.CancelledError:
            if not self._expired(expiry):
                raise
            _fail(rec, "timeout", f"connect did not complete within {self.timeout_s} s")
            return None
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError):
                error = "refused"
            elif isinstance(exc, _CUT):
                error = "reset"
            elif isinstance(exc, TimeoutError):
                error = "timeout"
            else:  # no route, no local port ...: the connection could not be made
                error = "refused"
            _fail(rec, error, f"connect: {type(exc).__name__}: {exc}")
            return None
        finally:
            if expiry.handle is not None:
                expiry.handle.cancel()
        return conn

    async def _exchange(self, rec: RequestRecord, conn: _Conn) -> _Conn | None:
        """Read one response; return the connection when it may carry the next request."""
        expiry = self._arm(conn.t_write)
        wire = 0  # response bytes seen on the wire, head included
        framed = False  # Content-Length or chunked: a body cut is provable
        body = bytearray()
        done = False
        try:
            if rec.sent_mono is None and conn.written:
                try:
                    await conn.drain()
                    if conn.transport is not None and not conn.transport.is_closing():
                        rec.sent_mono, rec.sent_wall = _now()
                except _CUT:
                    pass  # the read below reports how the connection ended
            while True:
                try:
                    data = await conn.read()
                except _CUT as exc:
                    if rec.headers_mono is not None and framed:
                        _fail(rec, "truncated", f"body cut: {type(exc).__name__}: {exc}")
                    else:
                        _fail(rec, "reset", f"{type(exc).__name__}: {exc}")
                    return None
                wire += len(data)
                try:
                    conn.h11.receive_data(data)
                    while True:
                        event = conn.h11.next_event()
                        if event is h11.NEED_DATA:
                            break
                        if isinstance(event, h11.Response):
                            rec.headers_mono, rec.headers_wall = _now()
                            rec.status = event.status_code
                            framed = self._read_head(rec, event.headers)
                        elif isinstance(event, h11.Data):
                            rec.bytes_received += len(event.data)
                            if len(body) < BODY_LIMIT:
                                body += event.data[: BODY_LIMIT - len(body)]
                        elif isinstance(event, h11.EndOfMessage):
                            rec.finished_mono, rec.finished_wall = _now()
                            done = True
                            break
                except h11.RemoteProtocolError as exc:
                    if data:
                        _fail(rec, "protocol_error", f"malformed response: {exc}")
                    elif wire == 0:
                        detail = "connection closed by the server before any response byte"
                        if not conn.written:
                            detail += " (it was closed before the request could be written)"
                        _fail(rec, "empty_reply", detail)
                    elif rec.headers_mono is None:
                        _fail(
                            rec,
                            "protocol_error",
                            f"connection closed inside the response head after {wire} bytes",
                        )
                    else:
                        _fail(rec, "truncated", str(exc))
                    return None
                if done:
                    break
                if not data:  # EOF that h11 accepted without ending the message: cannot happen
                    _fail(rec, "protocol_error", "connection closed mid-response")
                    return None
        except asyncio.CancelledError:
            if not self._expired(expiry):
                raise
            state = "before the response head" if rec.headers_mono is None else "mid-body"
            _fail(rec, "timeout", f"no complete response within {self.timeout_s} s ({state})")
            return None
        finally:
            if expiry.handle is not None:
                expiry.handle.cancel()
            rec.body = body.decode("utf-8", "replace")
            if self.expect_body is not None:
                rec.body_ok = self.expect_body in rec.body
            if not done:
                conn.abort()
        if self.reuse and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            return conn
        conn.close()
        return None

    @staticmethod
    def _read_head(rec: RequestRecord, headers: list[tuple[bytes, bytes]]) -> bool:
        framed = False
        for name, value in headers:
            if name == b"content-length":
                rec.content_length = int(value)
                framed = True
            elif name == b"transfer-encoding":
                framed = True
            elif name == _POD:
                rec.pod = value.decode("latin-1")
            elif name == _REVISION:
                rec.revision = value.decode("latin-1")
            elif name == b"server":
                rec.server = value.decode("latin-1")
        return framed

    async def _event(
        self, event: Event, rec: EventRecord, executor: concurrent.futures.Executor
    ) -> None:
        await self._sleep_until(event.at_s)
        seen: dict[str, Any] = {}

        def call() -> None:
            seen["started"] = _now()
            try:
                seen["result"] = event.action()
            except Exception as exc:  # recorded, the schedule goes on
                seen["error"] = f"{type(exc).__name__}: {exc}"
            seen["finished"] = _now()

        try:
            await asyncio.get_running_loop().run_in_executor(executor, call)
        except asyncio.CancelledError:
            rec.error = f"schedule deadline of {self.deadline_s} s hit before the event finished"
            raise
        finally:
            rec.started_mono, rec.started_wall = seen.get("started", (None, None))
            if "finished" in seen:
                rec.finished_mono, rec.finished_wall = seen["finished"]
                rec.error = seen.get("error")
                rec.result = _short(seen.get("result"))


async def run_schedule(
    url: str,
    batches: Sequence[Batch],
    events: Sequence[Event] = (),
    *,
    timeout_s: float | None = None,
    expect_body: str | None = None,
    reuse_connections: bool = False,
    headers: Mapping[str, str] | None = None,
    connect_lead_s: float = 0.5,
    deadline_s: float | None = None,
) -> ScheduleResult:
    """Run batches and events at their offsets; one record per planned request, never retried.

    ``timeout_s`` bounds each request from its write to the end of its body (and each
    connect on its own); ``deadline_s`` bounds the whole call (connect lead included): what
    is still running then is cancelled and recorded as "timeout". Offsets ``at_s`` count
    from ``ScheduleResult.started_mono``, which leaves the first batch its connect lead.
    A "Host" entry in ``headers`` overrides the Host header (Knative ingress routing).
    """
    runner = _Runner(
        url,
        batches,
        events,
        timeout_s=timeout_s,
        expect_body=expect_body,
        reuse_connections=reuse_connections,
        headers=headers,
        connect_lead_s=connect_lead_s,
        deadline_s=deadline_s,
    )
    thresholds = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        return await runner.run()
    finally:
        gc.set_threshold(*thresholds)


def run_schedule_sync(
    url: str,
    batches: Sequence[Batch],
    events: Sequence[Event] = (),
    *,
    timeout_s: float | None = None,
    expect_body: str | None = None,
    reuse_connections: bool = False,
    headers: Mapping[str, str] | None = None,
    connect_lead_s: float = 0.5,
    deadline_s: float | None = None,
) -> ScheduleResult:
    """``run_schedule`` for callers without an event loop (pytest tests, the CLI)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_schedule_sync: called inside a running event loop; await run_schedule"
        )
    return asyncio.run(
        run_schedule(
            url,
            batches,
            events,
            timeout_s=timeout_s,
            expect_body=expect_body,
            reuse_connections=reuse_connections,
            headers=headers,
            connect_lead_s=connect_lead_s,
            deadline_s=deadline_s,
        )
    )


def run_batch(url: str, requests: int, concurrency: int | None = None, **kw: Any) -> ScheduleResult:
    """One batch named "load" at offset 0: the plain load test."""
    return run_schedule_sync(url, [Batch("load", requests, concurrency=concurrency)], **kw)
