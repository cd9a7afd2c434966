"""HTTP/1.1 on the wire for the load engine: the GET it writes, the response it reads.

A small RFC 9112 response parser (status line, Content-Length, chunked and
close-delimited bodies, CRLF line endings) fed by the engine's callbacks, one per
connection and reset per request. It writes what it reads straight into the request's
``RequestRecord`` (status, head time, pod and revision headers, body bytes), so the
classification stays exact and no per-response objects are made. Requests are checked
the way h11 checks them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from .records import BODY_LIMIT, BODY_TAIL, POD_HEADER, REVISION_HEADER, RequestRecord

HEAD_LIMIT = 65536  # bytes a response head (or a chunk header) may take
# response framing, and chunked-decoder states (negative values of ResponseParser.left)
HEAD, NONE, LENGTH, CHUNKED, CLOSE = range(5)
_CHUNK_SIZE, _CHUNK_CRLF, _CHUNK_TRAILER = -1, -2, -3
_POD = POD_HEADER.encode()
_REVISION = REVISION_HEADER.encode()
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: [^\r\n]*)?")
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
_TARGET = re.compile(r"[\x21-\x7e]+")


class ProtocolError(Exception):
    """The response broke HTTP/1.1 framing (RFC 9112)."""


@dataclass(frozen=True)
class Target:
    host: str  # what to connect to
    port: int
    authority: str  # default Host header
    path: str  # path?query of the URL
    tls: bool = False  # https: the engine wraps each connection in TLS (tls_socket)


def parse_url(url: str) -> Target:
    """Where to connect and what to ask for; ValueError naming what is wrong."""
    if not isinstance(url, str):
        raise ValueError(f"url: an http://host[:port]/path URL is required, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"url: only http:// or https://host[:port]/path URLs are supported, got {url!r}"
        )
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ValueError(f"url: bad port in {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.hostname, port, parts.netloc.rpartition("@")[2], path, tls)


def request_bytes(target: str, headers: list[tuple[str, str]]) -> bytes:
    """The GET request as it goes on the wire; built once per batch, checked like h11 does."""
    if not _TARGET.fullmatch(target):
        raise ValueError(f"headers/path: not a valid HTTP request: illegal target {target!r}")
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(
                f"headers/path: not a valid HTTP request: illegal header {name!r}: {value!r}"
            )
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class _ProtocolError(Exception):
    """The response broke HTTP/1.1 framing (RFC 9112)."""


class ResponseParser:
    """One connection's response parser; ``reset`` before each request.

    ``framing`` tells the engine where a cut happened (head, body, close-delimited);
    ``keep`` whether the connection may carry another request; ``left`` the body bytes
    still expected (Content-Length framing).
    """

    __slots__ = ("rec", "wall_off", "hbuf", "framing", "left", "cbuf", "body", "tail", "keep")

    def __init__(self) -> None:
        self.wall_off = 0.0  # wall clock = monotonic + wall_off (the engine's anchor)
        self.rec: RequestRecord | None = None
        self.hbuf = b""
        self.framing = HEAD
        self.left = 0
        self.cbuf = b""
        self.body = b""
        self.tail = b""  # the last BODY_TAIL bytes: a stream's end line
        self.keep = False

    def reset(self, rec: RequestRecord, wall_off: float) -> None:
        """Start reading the response to ``rec``; stamps use the engine's clock anchor."""
        self.rec = rec
        self.wall_off = wall_off
        self.hbuf = b""
        self.framing = HEAD
        self.body = b""
        self.tail = b""
        self.keep = False

    def feed(self, data: bytes) -> bool:
        """Parse what arrived; True once the response is complete."""
        while self.framing == HEAD:
            buf = self.hbuf + data if self.hbuf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > HEAD_LIMIT:
                    raise ProtocolError(f"response head larger than {HEAD_LIMIT} bytes")
                self.hbuf = buf
                return False
            self.hbuf = b""
            data = buf[end + 4 :]
            self._head(buf[:end])
        framing = self.framing
        if framing == LENGTH:
            if len(data) >= self.left:
                self._take(data[: self.left])
                self.left = 0
                return True
            self._take(data)
            self.left -= len(data)
            return False
        if framing == CHUNKED:
            return self._chunks(data)
        if framing == CLOSE:
            self._take(data)
            return False
        return True  # NONE: no body; extra bytes are ignored as h11 would keep them

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        if m is None:
            raise ProtocolError(f"illegal status line: {lines[0][:100]!r}")
        status = int(m[2])
        if status < 200:
            if status == 101:
                raise ProtocolError("101 Switching Protocols answered to a plain GET")
            return  # interim response (100, 103): the final one follows
        rec: RequestRecord = self.rec  # type: ignore[assignment]
        mono = time.monotonic()
        rec.headers_mono = mono
        rec.headers_wall = mono + self.wall_off
        rec.status = status
        length: int | None = None
        chunked = False
        keep = m[1] == b"1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in b" \t" or line[:1] in b" \t":
                raise ProtocolError(f"illegal header line: {line[:100]!r}")
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if not part.isdigit() or (length is not None and int(part) != length):
                        raise ProtocolError(f"bad Content-Length: {value[:100]!r}")
                    length = int(part)
            elif name == b"transfer-encoding":
                if value.rsplit(b",", 1)[-1].strip(b" \t").lower() != b"chunked":
                    raise ProtocolError(f"unsupported Transfer-Encoding: {value[:100]!r}")
                chunked = True
            elif name == b"connection":
                if b"close" in value.lower().replace(b" ", b"").split(b","):
                    keep = False
            elif name == _POD:
                rec.pod = value.decode("latin-1")
            elif name == _REVISION:
                rec.revision = value.decode("latin-1")
            elif name == b"server":
                rec.server = value.decode("latin-1")
        rec.content_length = length
        if status in (204, 304):
            self.framing = NONE
        elif chunked:
            self.framing = CHUNKED
            self.left = -1
            self.cbuf = b""
        elif length is not None:
            self.framing = LENGTH if length else NONE
            self.left = length
        else:
            self.framing = CLOSE
            keep = False  # the body ends at EOF
        self.keep = keep

    def _take(self, data: bytes) -> None:
        if not data:
            return
        self.rec.bytes_received += len(data)  # type: ignore[union-attr]
        if len(self.body) < BODY_LIMIT:
            self.body += data[: BODY_LIMIT - len(self.body)]
        self.tail = (self.tail + data)[-BODY_TAIL:] if len(data) < BODY_TAIL else data[-BODY_TAIL:]

    def _chunks(self, data: bytes) -> bool:
        buf = self.cbuf + data if self.cbuf else data
        pos = 0
        size = len(buf)
        while True:
            left = self.left
            if left > 0:  # chunk data
                take = min(left, size - pos)
                self._take(buf[pos : pos + take])
                pos += take
                self.left = left - take
                if self.left:
                    break
                self.left = _CHUNK_CRLF
            elif left == _CHUNK_CRLF:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self.left = _CHUNK_SIZE
            else:  # a chunk-size line, or a trailer line after the last chunk
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if size - pos > HEAD_LIMIT:
                        raise ProtocolError("chunk header or trailer too long")
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if left == _CHUNK_TRAILER:
                    if not line:
                        self.cbuf = b""
                        return True
                    continue
                digits = line.split(b";", 1)[0].strip(b" \t")
                if not digits or digits.lstrip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError(f"illegal chunk header: {line[:100]!r}")
                n = int(digits, 16)
                self.left = n if n else _CHUNK_TRAILER
        self.cbuf = buf[pos:]
        return False
