"""The response parser on its own: framing decided by the head, bytes fed in any split."""

from __future__ import annotations

import pytest

from pytest_knative_drain.load.http1 import (
    CLOSE,
    LENGTH,
    ProtocolError,
    ResponseParser,
    parse_url,
    request_bytes,
)
from pytest_knative_drain.load.records import RequestRecord


def _fed(wire: bytes, step: int) -> tuple[ResponseParser, RequestRecord, bool]:
    rec = RequestRecord(id=0, batch="b", url="u")
    parser = ResponseParser()
    parser.reset(rec, wall_off=100.0)
    done = False
    for i in range(0, len(wire), step):
        assert not done, "complete before the last byte"
        done = parser.feed(wire[i : i + step])
    return parser, rec, done


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_chunked_body_in_any_split(step: int) -> None:
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-pod-name: pod-a\r\n"
        b"Server: envoy\r\n\r\n"
        b"5;ext=1\r\nslept\r\n6\r\n 75 ms\r\n0\r\nTrailer: x\r\n\r\n"
    )
    parser, rec, done = _fed(wire, step)
    assert done and parser.body == b"slept 75 ms" and rec.bytes_received == 11
    assert (rec.status, rec.pod, rec.server) == (200, "pod-a", "envoy")
    assert rec.headers_wall == pytest.approx(rec.headers_mono + 100.0)
    assert parser.keep


def test_content_length_and_close_delimited() -> None:
    parser, rec, done = _fed(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nEOF", 2)
    assert done and parser.framing == LENGTH and parser.body == b"EOF" and rec.status == 502
    parser, rec, done = _fed(b"HTTP/1.0 200 OK\r\n\r\npartial", 4)
    assert not done and parser.framing == CLOSE and not parser.keep  # ends at EOF
    assert parser.body == b"partial"


def test_interim_response_then_final() -> None:
    parser, rec, done = _fed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", 5
    )
    assert done and rec.status == 204 and parser.body == b""


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "illegal header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "illegal chunk header"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols"),
    ],
)
def test_broken_framing_is_a_protocol_error(wire: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        _fed(wire, len(wire))


def test_request_and_url_checks() -> None:
    target = parse_url("http://127.0.0.1:31080/?sleep=1000")
    assert (target.host, target.port, target.path) == ("127.0.0.1", 31080, "/?sleep=1000")
    wire = request_bytes(target.path, [("Host", "svc.ns.example.com")])
    assert wire == b"GET /?sleep=1000 HTTP/1.1\r\nHost: svc.ns.example.com\r\n\r\n"
    with pytest.raises(ValueError, match="illegal header"):
        request_bytes("/", [("Host", "a\r\nb")])
    secure = parse_url("https://127.0.0.1/")
    assert (secure.port, secure.tls, target.tls) == (443, True, False)
    with pytest.raises(ValueError, match="only http:// or https://"):
        parse_url("ftp://127.0.0.1/")
