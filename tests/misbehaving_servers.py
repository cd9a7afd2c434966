"""Real loopback HTTP servers that misbehave on purpose.

Each failure the load engine must classify is produced here on a real socket
(RST via SO_LINGER 0, FIN without bytes, short bodies ...), so tests prove the
wire behaviour rather than a mock of it. Servers count connections and request
heads they read, which proves a failed request was reported and not resent.

Usage::

    with LoopbackServer("reset") as srv:
        result = run_batch(srv.url + "?sleep=100", 10)
        assert srv.requests == 10
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

BEHAVIOURS = {
    "ok": "200 after ?sleep=<ms>, body 'slept <ms> ms on <pod>', x-pod-name/x-revision-name",
    "reset": "read the request, then close with SO_LINGER 0 (RST), no bytes",
    "close": "read the request, then close normally (FIN), no bytes",
    "bad_gateway": "502 with the Go error body 'EOF' (Content-Length 3), as queue-proxy",
    "truncate": "200 declaring Content-Length 100, send 10 body bytes, then FIN",
    "truncate_reset": "200 declaring Content-Length 100, send 10 body bytes, then RST",
    "reset_unframed": "200 without Content-Length (close-delimited), 10 bytes, then RST",
    "stall_body": "200 declaring Content-Length 100, send 10 body bytes, then hold",
    "hold": "read the request and never answer",
    "garbage": "answer with bytes that are not HTTP, then FIN",
    "chunked": "103 Early Hints, then 200 chunked 'hello world' in pieces split mid-line, trailer",
    "chunked_truncate": "200 chunked: one chunk 'hello', then FIN before the last chunk",
    "unframed": "200 without Content-Length (close-delimited) 'hello', then FIN: a complete reply",
    "http10": "HTTP/1.0 200 with Content-Length: complete, but the connection cannot be reused",
    "bad_length": "200 with two different Content-Length values",
    "early_close": "close (FIN) as soon as the connection is accepted, before any request",
}
# the "chunked" reply, written piece by piece with pauses so the parser sees every split
CHUNKED_PIECES = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-En",
    b"coding: chunked\r\nConnection: close\r\n\r\n5\r",
    b"\nhel",
    b"lo\r",
    b"\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t",
    b"\r\n\r\n",
)
SERVER_NAME = "misbehaving"
_LINGER_0 = struct.pack("ii", 1, 0)


class LoopbackServer:
    """A server on 127.0.0.1:<ephemeral> in its own thread and event loop.

    ``?sleep=<ms>`` delays every behaviour (the failure happens mid-request).
    ``lie_keepalive`` answers "Connection: keep-alive" and closes anyway, the
    stale keep-alive race of knative/serving#12414.
    """

    def __init__(
        self,
        behaviour: str = "ok",
        *,
        pod: str = "pod-a",
        revision: str = "rev-1",
        lie_keepalive: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour: one of {sorted(BEHAVIOURS)}, got {behaviour!r}")
        self.behaviour = behaviour
        self.pod = pod
        self.revision = revision
        self.lie_keepalive = lie_keepalive
        self.tls = tls  # a server context: every behaviour over TLS (https:// URL)
        self.connections = 0  # accepted connections
        self.requests = 0  # request heads read
        self.heads: list[bytes] = []  # the raw request heads, in arrival order
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def __str__(self) -> str:
        return self.url

    def __enter__(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._main, name=f"srv-{self.behaviour}")
        self._thread.daemon = True
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"loopback server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
        if thread is not None:
            thread.join(10)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096, ssl=self.tls)
            )
            self.port = server.sockets[0].getsockname()[1]
            self._server = server
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _stop(self) -> None:
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            if self.behaviour == "early_close":
                return
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                self.requests += 1
                self.heads.append(head)
                if not await self._respond(reader, writer, head):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return  # shutdown cancels held requests; streams' callback chokes on a cancelled task
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> bool:
        """Answer one request; True when the connection carries on (keep-alive)."""
        target = head.split(b" ", 2)[1].decode("latin-1")
        sleep_ms = int(parse_qs(urlsplit(target).query).get("sleep", ["0"])[0])
        if sleep_ms:
            await asyncio.sleep(sleep_ms / 1000)
        b = self.behaviour
        if b == "hold":
            await asyncio.Event().wait()
        if b == "reset":
            _reset(writer)
            return False
        if b == "close":
            return False
        if b == "garbage":
            writer.write(b"HELLO THIS IS NOT HTTP\r\n\r\n")
            await writer.drain()
            return False
        if b == "chunked":
            for piece in CHUNKED_PIECES:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)
            return False
        if b in ("chunked_truncate", "unframed", "http10", "bad_length"):
            writer.write(
                {
                    "chunked_truncate": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n",
                    "unframed": b"HTTP/1.1 200 OK\r\n\r\nhello",
                    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                    "bad_length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
                    b"\r\nhello",
                }[b]
            )
            await writer.drain()
            if b == "http10":  # a keep-alive client must not reuse this: wait for its FIN
                await reader.read()
            return False
        if b == "bad_gateway":
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"X-Content-Type-Options: nosniff\r\nContent-Length: 3\r\n"
                b"Connection: close\r\n\r\nEOF"
            )
            await writer.drain()
            return False
        if b in ("truncate", "truncate_reset", "stall_body", "reset_unframed"):
            length = b"" if b == "reset_unframed" else b"Content-Length: 100\r\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + length + self._ids() + b"Connection: close\r\n\r\n"
                b"0123456789"
            )
            await writer.drain()
            if b == "stall_body":
                await asyncio.Event().wait()
            if b in ("truncate_reset", "reset_unframed"):
                await asyncio.sleep(0.05)  # let the bytes reach the client before the RST
                _reset(writer)
            return False
        keep = b"connection: keep-alive" in head.lower()
        body = f"slept {sleep_ms} ms on {self.pod}\n".encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + b"Content-Length: %d\r\n" % len(body)
            + self._ids()
            + (b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n")
            + b"\r\n"
            + body
        )
        await writer.drain()
        return keep and not self.lie_keepalive

    def _ids(self) -> bytes:
        return (
            f"x-pod-name: {self.pod}\r\nx-revision-name: {self.revision}\r\n"
            f"Server: {SERVER_NAME}\r\n"
        ).encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    writer.transport.abort()


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A loopback URL whose port is bound but not listening: connects get RST (refused).

    Holding the bound socket keeps anyone else from taking the port meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


class Relay:
    """A loopback TCP relay standing in the way ``kubectl port-forward`` or an ingress does:
    one listener, each connection piped to the backend; ``stop()`` closes the listener and
    every connection, as the forward does when it exits on an error. ``lag_s``: the
    backend's end of a connection is passed on that much later (through Kourier and
    queue-proxy the TCP end trailed a websocket close frame by 1.0-1.2 s)."""

    def __init__(self, backend_port: int, lag_s: float = 0.0) -> None:
        self.backend_port, self.lag_s = backend_port, lag_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                down, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            up = socket.create_connection(("127.0.0.1", self.backend_port))
            self.open += [down, up]
            for a, b, lag in ((down, up, 0.0), (up, down, self.lag_s)):
                threading.Thread(target=_pipe, args=(a, b, lag), daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.server.close()
        for s in self.open:
            with contextlib.suppress(OSError):
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                s.close()


def _pipe(src: socket.socket, dst: socket.socket, lag_s: float = 0.0) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    time.sleep(lag_s)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
