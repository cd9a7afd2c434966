"""One connection of a batch, driven by event-loop callbacks: connect, TLS, write, read.

``ConnectionSlot`` is the engine's state machine. It runs its batch slot's requests one
after another on a non-blocking socket watched with ``add_reader``/``add_writer``: no
task, future, transport or timer per request, which is what keeps thousands of
concurrent long requests cheap. Each request ends in exactly one way (answered, cut,
timed out, refused), decided here and written into its ``RequestRecord``; the schedule
(schedule.py) only queues connects, sweeps deadlines and accounts for what is left.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import TYPE_CHECKING

from .http1 import (
    CHUNKED,
    CLOSE,
    HEAD,
    LENGTH,
    ProtocolError,
    ResponseParser,
)
from .records import RequestRecord
from .tls_socket import TLSSocket, handshake_error

if TYPE_CHECKING:
    from .schedule import _BatchRun, _Runner

_CUT = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_RECV = 65536
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: non-blocking from birth, no extra call
_STREAM = socket.SOCK_STREAM | _NONBLOCK | getattr(socket, "SOCK_CLOEXEC", 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
_mono = time.monotonic
# slot phases
_IDLE, _QUEUED, _CONNECTING, _READY, _EXCHANGE, _DONE = range(6)


def _short(value: object, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConnectionSlot:
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
