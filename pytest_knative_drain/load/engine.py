"""Long-request load engine: fire scheduled batches of HTTP/1.1 requests, record raw facts.

Why its own client: the gate must see every failure exactly once. aiohttp silently
resends an idempotent GET after a server disconnect and has a 300 s default total
timeout; httpx needed 95 s wall for 3,000 concurrent 15 s requests. This engine has no
retries and no pool: one connection per request with ``Connection: close`` unless reuse
is asked.

Why it is callback-driven: thousands of concurrent requests must cost the CI runner
little CPU. Each connection is a non-blocking socket watched by the event loop
(``add_reader``/``add_writer``), with no task, future, transport or timer per request;
responses are read by a small RFC 9112 parser (http1.py: status line, Content-Length, chunked,
close-delimited bodies; CRLF line endings) that keeps the classification exact.
Timeouts are one deadline sweep over a time-ordered queue; wall-clock stamps derive
from one monotonic/wall anchor per schedule, so both clocks of a record agree.

Start skew is kept low with connect-ahead: a batch's connections are opened
``connect_lead_s`` before its instant, then every request is written in one tight
loop at the instant. Every planned request leaves exactly one ``RequestRecord``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import gc
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .http1 import (
    CHUNKED,
    CLOSE,
    HEAD,
    LENGTH,
    ProtocolError,
    ResponseParser,
    parse_url,
    request_bytes,
)
from .records import RequestRecord
from .tls_socket import ClientTLS, TLSSocket, handshake_error

CONNECT_PARALLEL = 256  # connects in flight at once: keeps the server's accept queue sane
FD_RESERVE = 64  # descriptors kept free for the interpreter, logs, event actions
# A burst of thousands of connections allocates long-lived objects that trigger ~160
# young and a full garbage collection: 12% of the engine's CPU. A higher young-generation
# threshold while a schedule runs cuts that to 2%; the old threshold is restored after.
GC_GEN0_THRESHOLD = 20000
USER_AGENT = "pytest-knative-drain"

_CUT = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_RECV = 65536
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: non-blocking from birth, no extra call
_STREAM = socket.SOCK_STREAM | _NONBLOCK | getattr(socket, "SOCK_CLOEXEC", 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
_mono = time.monotonic
# slot phases
_IDLE, _QUEUED, _CONNECTING, _READY, _EXCHANGE, _DONE = range(6)


@dataclass
class Batch:
    """``requests`` GETs of ``path`` due ``at_s`` seconds after schedule start.

    ``concurrency`` None sends all at once; otherwise that many slots each send
    their share one after another. ``path`` "/" keeps the URL's own path and query;
    any other value (may hold a query, e.g. "/?sleep=300000") replaces them.
    ``expect_end``: a stream's proof of completeness, the prefix its body's last line must
    have (the fixture apps' ``/stream`` ends with "stream complete: ..."); it replaces the
    schedule's ``expect_body`` for this batch.
    """

    name: str
    requests: int
    at_s: float = 0.0
    path: str = "/"
    concurrency: int | None = None
    expect_end: str | None = None

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
        if self.expect_end is not None and (
            not isinstance(self.expect_end, str) or not self.expect_end
        ):
            raise ValueError(
                f"Batch {self.name!r} expect_end: None or a non-empty string, "
                f"got {self.expect_end!r}"
            )
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


def _short(value: object, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Slot:
    """One connection slot of a batch: its requests one after another, driven by callbacks.

    No task, future or transport per request: a non-blocking socket watched with
    ``add_reader``/``add_writer`` and a small RFC 9112 response parser. ``tok`` changes at
    every phase change, so a stale timeout entry for this slot is recognised and ignored.
    """

    __slots__ = (
        "eng",
        "run",
        "recs",
        "k",
        "rec",
        "sock",
        "fd",
        "phase",
        "tok",
        "out",
        "reading",
        "writing",
        "written",
        "t_write",
        "wire",
        "p",
        "on_read",
        "early",
    )

    def __init__(self, eng: _Runner, run: _BatchRun, recs: list[RequestRecord]) -> None:
        self.eng = eng
        self.run = run
        self.recs = recs
        self.k = -1
        self.rec: RequestRecord | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        self.phase = _IDLE
        self.tok = 0
        self.out = b""
        self.reading = False
        self.writing = False
        self.written = False
        self.t_write = 0.0
        self.wire = 0
        self.p = ResponseParser()
        self.on_read = self._on_read
        self.early: bytes | OSError | None = None  # what the peer did before our write

    # --- request sequence -------------------------------------------------------------

    def next(self) -> None:
        """Start the slot's next request, or report the slot done."""
        if self.phase == _DONE:
            return  # aborted by the schedule deadline
        self.k += 1
        if self.k >= len(self.recs):
            self.phase = _DONE
            self.rec = None
            self._close()
            self.run.slot_done()
            return
        rec = self.rec = self.recs[self.k]
        eng = self.eng
        if self.k == 0:
            rec.planned_at = float(self.run.batch.at_s)
        else:
            rec.planned_at = _mono() - eng.t0
        if self.sock is None:
            self.phase = _QUEUED
            self.tok += 1
            eng.watch(self)
            eng.queue_connect(self)
        else:  # a kept-alive connection carries the next request
            self.write()

    def connect(self) -> bool:
        """Begin a non-blocking connect; False when it failed at once (already recorded)."""
        eng = self.eng
        try:
            sock = socket.socket(eng.family, _STREAM)
        except OSError as exc:
            self._connect_failed(exc)
            return False
        if not _NONBLOCK:
            sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        err = sock.connect_ex(eng.addr)
        if err == 0 and eng.tls is None:
            self._connected()
            return False
        if err and err not in _IN_PROGRESS:
            self._connect_failed(OSError(err, os.strerror(err)))
            return False
        self.phase = _CONNECTING
        eng.loop.add_writer(self.fd, self._on_connect)
        self.writing = True
        return True

    def _on_connect(self) -> None:
        try:
            self._connect_done()
        except Exception as exc:  # an engine bug: surface it through the batch
            self.run.crash(exc)

    def _connect_done(self) -> None:
        eng = self.eng
        eng.loop.remove_writer(self.fd)
        self.writing = False
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
        if not err and eng.tls is not None:
            self.sock = TLSSocket(self.sock, eng.tls)  # type: ignore[arg-type]
            self._handshake()  # still connecting: connect_finished() when it ends
            return
        eng.connect_finished()
        if err:
            self._connect_failed(OSError(err, os.strerror(err)))
        else:
            self._connected()

    def _handshake(self) -> None:
        try:
            self._handshake_step()
        except Exception as exc:  # an engine bug: surface it through the batch
            self.run.crash(exc)

    def _handshake_step(self) -> None:
        """One TLS handshake step (https): wait for the socket, fail, or go on connected."""
        eng = self.eng
        if self.reading:
            eng.loop.remove_reader(self.fd)
            self.reading = False
        if self.writing:
            eng.loop.remove_writer(self.fd)
            self.writing = False
        try:
            want = self.sock.handshake()  # type: ignore[union-attr]
        except OSError as exc:
            eng.connect_finished()
            error, detail = handshake_error(exc)
            self._close()
            eng.fail(self.rec, error, detail)  # type: ignore[arg-type]
            self.tok += 1
            self.phase = _IDLE
            eng.loop.call_soon(self.next)
            return
        if want == "read":
            eng.loop.add_reader(self.fd, self._handshake)
            self.reading = True
        elif want == "write":
            eng.loop.add_writer(self.fd, self._handshake)
            self.writing = True
        else:
            eng.connect_finished()
            self._connected()

    def _connected(self) -> None:
        self.tok += 1
        if self.k == 0 and not self.run.go:
            self.phase = _READY
            self.run.ready.append(self)
            # watch the socket now, so the write loop at the instant only writes
            self.eng.loop.add_reader(self.fd, self.on_read)
            self.reading = True
        else:
            self.write()

    def _connect_failed(self, exc: OSError) -> None:
        if isinstance(exc, ConnectionRefusedError):
            error = "refused"
        elif isinstance(exc, _CUT):
            error = "reset"
        elif isinstance(exc, TimeoutError):
            error = "timeout"
        else:  # no route, no local port ...: the connection could not be made
            error = "refused"
        self._close()
        self.eng.fail(self.rec, error, f"connect: {type(exc).__name__}: {exc}")  # type: ignore[arg-type]
        self.tok += 1
        self.phase = _IDLE
        self.eng.loop.call_soon(self.next)  # not recursively: a slot may fail many in a row

    def write(self) -> None:
        """Hand the request to the kernel; ``sent`` is stamped once all of it is in."""
        rec: RequestRecord = self.rec  # type: ignore[assignment]
        eng = self.eng
        self.phase = _EXCHANGE
        self.tok += 1
        self.wire = 0
        self.p.reset(rec, eng.wall_off)
        self.written = False
        self.t_write = _mono()
        eng.watch(self)
        payload = self.run.payload
        try:
            n = self.sock.send(payload)  # type: ignore[union-attr]
        except BlockingIOError:
            n = 0
        except OSError as exc:  # peer already gone: the request never left
            self._end("reset", f"{type(exc).__name__}: {exc}", later=True)
            return
        self.written = True
        if n == len(payload):
            m = _mono()
            rec.sent_mono = m
            rec.sent_wall = m + eng.wall_off
        else:
            self.out = payload[n:]
            eng.loop.add_writer(self.fd, self._on_writable)
            self.writing = True
        if not self.reading:
            eng.loop.add_reader(self.fd, self.on_read)
            self.reading = True
        early = self.early
        if early is not None:  # the peer closed, reset or spoke before our request went out
            self.early = None
            self._on_read(early)

    def _on_writable(self) -> None:
        try:
            n = self.sock.send(self.out)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError:
            return  # the reader reports how the connection ended
        self.out = self.out[n:]
        if not self.out:
            self.eng.loop.remove_writer(self.fd)
            self.writing = False
            m = _mono()
            self.rec.sent_mono = m  # type: ignore[union-attr]
            self.rec.sent_wall = m + self.eng.wall_off  # type: ignore[union-attr]

    # --- the response -----------------------------------------------------------------

    def _on_read(self, early: bytes | OSError | None = None) -> None:
        try:
            if early is None:
                data = self.sock.recv(_RECV)  # type: ignore[union-attr]
            elif isinstance(early, OSError):
                raise early
            else:
                data = early
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self.phase != _EXCHANGE:
                self._hold(exc)
            else:
                self._cut(exc)
            return
        if self.phase != _EXCHANGE:
            self._hold(data)
            return
        try:
            if data:
                self.wire += len(data)
                if self.p.feed(data):
                    self._complete()
            else:
                self._eof()
        except ProtocolError as exc:
            self._end("protocol_error", f"malformed response: {exc}")
        except Exception as exc:  # an engine bug: surface it through the batch
            self.run.crash(exc)

    def _hold(self, what: bytes | OSError) -> None:
        """Before our write (waiting for the batch instant): keep it for after the write.

        The reader is removed meanwhile; a readable EOF would otherwise fire every loop turn.
        """
        self.eng.loop.remove_reader(self.fd)
        self.reading = False
        if isinstance(what, bytes) and isinstance(self.early, bytes):
            what = self.early + what
        self.early = what

    def _eof(self) -> None:
        framing = self.p.framing
        if framing == CLOSE:
            self._complete()
        elif self.wire == 0:
            detail = "connection closed by the server before any response byte"
            if not self.written:
                detail += " (it was closed before the request could be written)"
            self._end("empty_reply", detail)
        elif framing == HEAD:
            self._end(
                "protocol_error",
                f"connection closed inside the response head after {self.wire} bytes",
            )
        elif framing == LENGTH:
            got = self.rec.bytes_received  # type: ignore[union-attr]
            self._end(
                "truncated",
                "peer closed connection without sending complete message body: "
                f"received {got} bytes, expected {got + self.p.left}",
            )
        else:
            self._end(
                "truncated",
                "peer closed connection without sending complete message body: "
                "incomplete chunked read",
            )

    def _cut(self, exc: OSError) -> None:
        """The connection broke (RST ...): a body cut when framing proved it short."""
        if self.p.framing in (LENGTH, CHUNKED):
            self._end("truncated", f"body cut: {type(exc).__name__}: {exc}")
        else:
            self._end("reset", f"{type(exc).__name__}: {exc}")

    def _complete(self) -> None:
        rec: RequestRecord = self.rec  # type: ignore[assignment]
        m = _mono()
        rec.finished_mono = m
        rec.finished_wall = m + self.eng.wall_off
        self._settle()
        if not (self.p.keep and self.eng.reuse):
            self._close()
        self.next()

    def _end(self, error: str, detail: str, later: bool = False) -> None:
        """The exchange failed: record it, drop the connection, go on with the next."""
        self.eng.fail(self.rec, error, detail)  # type: ignore[arg-type]
        self._settle()
        self._close()
        if later:
            self.eng.loop.call_soon(self.next)
        else:
            self.next()

    def _settle(self) -> None:
        """Keep what the body said; the exchange is over."""
        rec: RequestRecord = self.rec  # type: ignore[assignment]
        self.tok += 1
        self.phase = _IDLE
        body = self.p.body
        if body:
            rec.body = body.decode("utf-8", "replace")
        if self.p.tail:
            rec.body_tail = self.p.tail.decode("utf-8", "replace")
        end = self.run.batch.expect_end
        if end is not None:  # a stream: its last line proves it complete
            lines = rec.body_tail.rstrip("\n").rsplit("\n", 1)
            rec.body_ok = rec.body_tail.endswith("\n") and lines[-1].startswith(end)
        elif self.eng.expect_body is not None:
            rec.body_ok = self.eng.expect_body in rec.body
        if self.reading:
            self.eng.loop.remove_reader(self.fd)
            self.reading = False
        if self.writing:
            self.eng.loop.remove_writer(self.fd)
            self.writing = False

    def _close(self) -> None:
        if self.sock is not None:
            if self.reading:
                self.eng.loop.remove_reader(self.fd)
                self.reading = False
            if self.writing:
                self.eng.loop.remove_writer(self.fd)
                self.writing = False
            self.sock.close()
            self.sock = None
            self.fd = -1
        self.early = None

    # --- timeouts and the schedule deadline ---------------------------------------------

    def expire(self) -> None:
        """Our per-request timeout ran out in this slot's current phase."""
        eng = self.eng
        if self.phase == _EXCHANGE:
            state = "before the response head" if self.p.framing == HEAD else "mid-body"
            self._end("timeout", f"no complete response within {eng.timeout_s} s ({state})")
            return
        if self.phase == _CONNECTING:
            eng.connect_finished()
        self.tok += 1
        self.phase = _IDLE
        self._close()
        eng.fail(self.rec, "timeout", f"connect did not complete within {eng.timeout_s} s")  # type: ignore[arg-type]
        self.next()

    def abort(self) -> None:
        """The schedule deadline: stop at once; ``_account`` records what was left."""
        if self.phase == _EXCHANGE:
            self._settle()
        self.phase = _DONE
        self.tok += 1
        self._close()


@dataclass
class _BatchRun:
    batch: Batch
    payload: bytes
    slots: list[list[RequestRecord]]
    done: asyncio.Future[None]
    go: bool = False
    ready: list[_Slot] = field(default_factory=list)
    workers: list[_Slot] = field(default_factory=list)
    pending: int = 0

    def slot_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self.done.done():
            self.done.set_result(None)

    def crash(self, exc: BaseException) -> None:
        """An engine bug inside a loop callback: fail the schedule loudly, not by a hang."""
        if not self.done.done():
            self.done.set_exception(exc)


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
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = parse_url(url)
        self.url = url
        if tls is not None and not isinstance(tls, ClientTLS):
            raise ValueError(f"tls: None or a ClientTLS, got {tls!r}")
        if tls is not None and not self.target.tls:
            raise ValueError(f"tls: settings for TLS given with a plain http:// URL {url!r}")
        self.tls = tls or (ClientTLS.default(self.target.host) if self.target.tls else None)
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
        self.payloads = [self._request(b.path) for b in batches]
        self.records: list[RequestRecord] = []
        for b in batches:
            for _ in range(b.requests):
                self.records.append(RequestRecord(id=len(self.records), batch=b.name, url=url))
        _ensure_fds(sum(b.slots for b in batches))
        self.wall_off = time.time() - _mono()  # re-anchored when the schedule starts
        self.t0 = 0.0
        self.connecting = 0
        self.connect_queue: collections.deque[tuple[_Slot, int]] = collections.deque()
        self.timeouts: collections.deque[tuple[float, _Slot, int]] = collections.deque()
        self.sweeper: asyncio.TimerHandle | None = None

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

    def _request(self, path: str) -> bytes:
        target = self.target.path if path == "/" else path
        return request_bytes(target, self.header_list)

    # --- shared machinery for the slots ---------------------------------------------------

    def fail(self, rec: RequestRecord, error: str, detail: str) -> None:
        rec.error = error
        rec.error_detail = detail
        m = _mono()
        rec.finished_mono = m
        rec.finished_wall = m + self.wall_off

    def queue_connect(self, slot: _Slot) -> None:
        """Connect now, or when one of the CONNECT_PARALLEL connects in flight ends."""
        if self.connecting < CONNECT_PARALLEL:
            if slot.connect():
                self.connecting += 1
        else:
            self.connect_queue.append((slot, slot.tok))

    def connect_finished(self) -> None:
        self.connecting -= 1
        queue = self.connect_queue
        while queue and self.connecting < CONNECT_PARALLEL:
            slot, tok = queue.popleft()
            if slot.tok == tok and slot.connect():  # a stale entry timed out while queued
                self.connecting += 1

    def watch(self, slot: _Slot) -> None:
        """Bound the slot's current phase by ``timeout_s``: one deadline sweep, no timer each.

        Entries are appended in time order with the same timeout, so the deque stays
        sorted and its head is always the next to expire.
        """
        if self.timeout_s is None:
            return
        self.timeouts.append((_mono() + self.timeout_s, slot, slot.tok))
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.timeout_s, self._sweep)

    def _sweep(self) -> None:
        queue = self.timeouts
        now = _mono()
        while queue and queue[0][0] <= now:
            _, slot, tok = queue.popleft()
            if slot.tok == tok:
                try:
                    slot.expire()
                except Exception as exc:  # an engine bug: surface it through the batch
                    slot.run.crash(exc)
        while queue and queue[0][1].tok != queue[0][2]:
            queue.popleft()  # finished long ago: no need to wake up for it
        if self.sweeper is not None:
            self.sweeper.cancel()  # armed by watch() meanwhile, maybe later than the head
        self.sweeper = None
        if queue:
            self.sweeper = self.loop.call_later(max(0.0, queue[0][0] - now), self._sweep)

    def now(self) -> tuple[float, float]:
        m = _mono()
        return m, m + self.wall_off

    # --- the schedule -----------------------------------------------------------------------

    async def run(self) -> ScheduleResult:
        loop = self.loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        self.family, _, _, _, self.addr = infos[0]
        # one clock anchor for the whole schedule: wall = mono + offset, consistent throughout
        self.wall_off = time.time() - _mono()
        called = _mono()  # the deadline counts from here: a hard bound on the call
        # Schedule start leaves the first batch its full connect lead.
        first = min((b.at_s for b in self.batches), default=0.0)
        self.t0 = called + max(0.05, self.lead - first)
        runs: list[_BatchRun] = []
        i = 0
        for b, payload in zip(self.batches, self.payloads, strict=True):
            recs = self.records[i : i + b.requests]
            i += b.requests
            slots = [recs[k :: b.slots] for k in range(b.slots)] if b.requests else []
            runs.append(_BatchRun(b, payload, slots, loop.create_future()))
        event_records = [EventRecord(e.name, float(e.at_s)) for e in self.events]
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(self.events)), thread_name_prefix="drain-event"
        )
        tasks = [asyncio.ensure_future(self._batch(r)) for r in runs]
        tasks += [
            asyncio.ensure_future(self._event(e, rec, executor))
            for e, rec in zip(self.events, event_records, strict=True)
        ]
        deadline_hit = False
        try:
            timeout = None
            if self.deadline_s is not None:
                timeout = called + self.deadline_s - _mono()
            _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else ((), ())
            if pending:
                deadline_hit = True
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # an engine bug: never disguise it as a server fault
        finally:
            for t in tasks:
                t.cancel()
            if self.sweeper is not None:
                self.sweeper.cancel()
            for run in runs:
                for slot in run.workers:
                    slot.abort()
            executor.shutdown(wait=False, cancel_futures=True)
        self._account(runs, deadline_hit)
        fm, fw = self.now()
        return ScheduleResult(
            self.records, event_records, self.t0, self.t0 + self.wall_off, len(self.records), fm, fw
        )

    def _account(self, runs: list[_BatchRun], deadline_hit: bool) -> None:
        """Every planned request ends with a record; unfinished ones hit the deadline."""
        for run in runs:
            for slot in run.slots:
                for rec in slot:
                    if rec.finished_mono is not None:
                        continue
                    if rec.planned_at is None:
                        rec.planned_at = float(run.batch.at_s)
                    where = "was sent" if rec.sent_mono is None else "completed"
                    self.fail(
                        rec,
                        "timeout",
                        f"schedule deadline of {self.deadline_s} s hit before the request {where}",
                    )

    async def _sleep_until(self, offset: float) -> None:
        delay = self.t0 + offset - _mono()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _batch(self, run: _BatchRun) -> None:
        await self._sleep_until(run.batch.at_s - self.lead)
        run.workers = [_Slot(self, run, recs) for recs in run.slots]
        run.pending = len(run.workers)
        if not run.workers:
            return
        for slot in run.workers:
            slot.next()
        await self._sleep_until(run.batch.at_s)
        run.go = True
        ready, run.ready = run.ready, []
        for slot in ready:  # the tight loop that keeps start skew low
            if slot.phase == _READY:
                slot.write()
        if run.pending:
            await run.done

    async def _event(
        self, event: Event, rec: EventRecord, executor: concurrent.futures.Executor
    ) -> None:
        await self._sleep_until(event.at_s)
        try:
            await run_event(event, rec, executor, self.now)
        except asyncio.CancelledError:
            rec.error = f"schedule deadline of {self.deadline_s} s hit before the event finished"
            raise


async def run_event(
    event: Event,
    rec: EventRecord,
    executor: concurrent.futures.Executor,
    now: Callable[[], tuple[float, float]],
) -> None:
    """Run ``event.action`` in ``executor`` and stamp ``rec``; an exception is recorded, never
    raised (the schedule goes on). Shared by the HTTP and the websocket engines."""
    seen: dict[str, Any] = {}

    def call() -> None:
        seen["started"] = now()
        try:
            seen["result"] = event.action()
        except Exception as exc:  # recorded, the schedule goes on
            seen["error"] = f"{type(exc).__name__}: {exc}"
        seen["finished"] = now()

    try:
        await asyncio.get_running_loop().run_in_executor(executor, call)
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
    tls: ClientTLS | None = None,
) -> ScheduleResult:
    """Run batches and events at their offsets; one record per planned request, never retried.

    ``timeout_s`` bounds each request from its write to the end of its body (and each
    connect on its own); ``deadline_s`` bounds the whole call (connect lead included): what
    is still running then is cancelled and recorded as "timeout". Offsets ``at_s`` count
    from ``ScheduleResult.started_mono``, which leaves the first batch its connect lead.
    A "Host" entry in ``headers`` overrides the Host header (Knative ingress routing).
    An https:// URL is spoken over TLS: ``tls`` says whom to trust, the SNI name and a SAN
    the certificate must carry (the system's roots and the URL's host if not given).
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
        tls=tls,
    )
    with _gc_relaxed():
        return await runner.run()


_gc_lock = threading.Lock()
_gc_schedules = 0  # schedules running now (one per thread when cases run concurrently)
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def _gc_relaxed() -> Iterator[None]:
    """GC_GEN0_THRESHOLD while any schedule runs: the threshold is the process's, so the
    first schedule in saves it and the last one out puts it back."""
    global _gc_schedules, _gc_saved
    with _gc_lock:
        if _gc_schedules == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_GEN0_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_schedules += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_schedules -= 1
            if _gc_schedules == 0:
                gc.set_threshold(*_gc_saved)


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
    tls: ClientTLS | None = None,
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
            tls=tls,
        )
    )


def run_batch(url: str, requests: int, concurrency: int | None = None, **kw: Any) -> ScheduleResult:
    """One batch named "load" at offset 0: the plain load test."""
    return run_schedule_sync(url, [Batch("load", requests, concurrency=concurrency)], **kw)
