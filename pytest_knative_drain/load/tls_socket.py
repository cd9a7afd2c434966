"""TLS for the load engine's non-blocking connections, shaped like the plain socket it knows.

The engine reads and writes non-blocking sockets from event-loop callbacks, treats
``BlockingIOError`` as "not now" and classifies a broken connection by the socket's own
error (``ConnectionResetError`` is a reset, ``b""`` an orderly end). :class:`TLSSocket`
keeps exactly that: TLS runs in memory (``ssl.SSLObject`` over two ``MemoryBIO``) and
only the plain socket talks to the kernel, so a reset stays a reset. (An ``ssl.SSLSocket``
would not do: Python reports a connection reset under TLS as a ragged EOF, ``b""``, and
says "not now" with ``SSLWantReadError``, which the engine would take for a cut.) The
handshake runs as part of connecting (:meth:`TLSSocket.handshake`, one step per readiness
event) and ends with the SAN check the activator makes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass

_RECV = 65536


@dataclass(frozen=True)
class ClientTLS:
    """A TLS client's settings: trust (``context``), SNI and checked name, a required SAN."""

    context: ssl.SSLContext
    server_hostname: str
    required_san: str | None = None

    @classmethod
    def default(cls, host: str) -> ClientTLS:
        """An https:// URL with nothing else said: the system's roots, the URL's host."""
        return cls(ssl.create_default_context(), host)


def check_san(peer: dict | None, san: str) -> None:
    """The activator's verifySAN: ``san`` must be one of the certificate's DNS names."""
    names = [value for kind, value in (peer or {}).get("subjectAltName", ()) if kind == "DNS"]
    if san not in names:
        raise ssl.SSLCertVerificationError(f"san {san!r} does not have a matching name in {names}")


class TLSSocket:
    """A connected non-blocking TCP socket with TLS on top; the handshake is not done yet."""

    __slots__ = ("_sock", "_in", "_out", "_tls", "_san", "_pending", "_owed", "_ended")

    def __init__(self, sock: socket.socket, tls: ClientTLS) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()  # bytes from the peer, for TLS to read
        self._out = ssl.MemoryBIO()  # bytes TLS wrote, for the peer
        self._tls = tls.context.wrap_bio(self._in, self._out, server_hostname=tls.server_hostname)
        self._san = tls.required_san
        self._pending = b""  # ciphertext the kernel has not taken yet
        self._owed = 0  # plaintext bytes already encrypted that the engine will offer again
        self._ended = False  # the peer sent close_notify (and we answered it)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _flush(self) -> bool:
        """Hand TLS's output to the kernel; True when none is left waiting."""
        data = self._pending + self._out.read()
        if data:
            with contextlib.suppress(BlockingIOError):
                data = data[self._sock.send(data) :]
        self._pending = data
        return not data

    def handshake(self) -> str | None:
        """One handshake step: ``"read"``/``"write"`` while it waits on the socket, None when
        done. Raises ``ssl.SSLError`` (a verification failure is ``SSLCertVerificationError``,
        the peer closing ``SSLEOFError``) or the ``OSError`` of a broken connection."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not self._flush():
                    return "write"
                try:
                    data = self._sock.recv(_RECV)
                except BlockingIOError:
                    return "read"
                if not data:
                    raise ssl.SSLEOFError(
                        ssl.SSL_ERROR_EOF, "connection closed by the server in the handshake"
                    ) from None
                self._in.write(data)
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # our alert, so the server knows why
                raise
        if not self._flush():
            return "write"
        if self._san is not None:
            check_san(self._tls.getpeercert(), self._san)
        return None

    def send(self, data: bytes) -> int:
        """Like ``socket.send``: how many of ``data``'s bytes are taken, BlockingIOError for
        none. A byte is held back while its ciphertext waits, so the engine keeps watching
        for writability until the whole request is with the kernel."""
        if not self._flush():
            raise BlockingIOError
        if self._ended:  # like a socket the peer shut: taken, and the reader sees the end
            return len(data)
        if self._owed:
            taken = min(self._owed, len(data))
            self._owed -= taken
            return taken
        if not data:
            return 0
        self._tls.write(data)
        if self._flush():
            return len(data)
        self._owed = 1
        return len(data) - 1

    def recv(self, size: int) -> bytes:
        """Application bytes, ``b""`` at the end of the stream, BlockingIOError for none yet;
        the socket's own errors (a reset) as they are."""
        raw = self._sock.recv(size)
        if raw:
            self._in.write(raw)
        else:
            self._in.write_eof()
        out = []
        ended = False
        while True:
            try:
                chunk = self._tls.read(size)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # ended, without close_notify
                break  # or after it
            if not chunk:  # close_notify: answer it, as a TLS client does, so a server
                ended = self._ended = True  # that waits for ours closes the connection now
                with contextlib.suppress(ssl.SSLError):
                    self._tls.unwrap()
                break
            out.append(chunk)
        with contextlib.suppress(OSError):
            self._flush()  # a post-handshake answer TLS may owe the peer
        if out:
            return b"".join(out)
        if ended or not raw:
            return b""
        raise BlockingIOError  # records without application data (session tickets)

    def close(self) -> None:
        self._sock.close()


def handshake_error(exc: OSError) -> tuple[str, str]:
    """The transport error (records.TRANSPORT_ERRORS) and detail of a failed handshake."""
    detail = f"TLS handshake: {type(exc).__name__}: {exc}"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "empty_reply", detail  # closed before any response byte
    if isinstance(exc, ssl.SSLError):
        return "protocol_error", detail  # untrusted certificate, wrong SAN, bad version ...
    if isinstance(exc, TimeoutError):
        return "timeout", detail
    return "reset", detail
