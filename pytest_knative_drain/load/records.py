"""The one record a measured request leaves behind.

The load engine fills it with raw wire facts only; ``verdict`` decides what
they mean, so classification can be tested from records alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Response headers the fixture apps set; read into ``RequestRecord.pod``/``revision``.
POD_HEADER = "x-pod-name"
REVISION_HEADER = "x-revision-name"

#: Transport outcomes the load engine can record in ``RequestRecord.error``.
TRANSPORT_ERRORS = ("reset", "empty_reply", "refused", "timeout", "truncated", "protocol_error")
#: How a websocket session can fail (load/websocket.py), also in ``RequestRecord.error``:
#: no close frame before the connection ended (1006), a TCP reset, an upgrade answered
#: with something else than 101, a close frame with another code than 1000, and a close
#: 1000 that left messages unanswered.
WEBSOCKET_ERRORS = (
    "ws_abnormal_close",
    "ws_reset",
    "ws_handshake_refused",
    "ws_close_code",
    "ws_unanswered",
)

#: How a gRPC call can fail (load/grpc.py), also in ``RequestRecord.error``: an HTTP error
#: answered instead of gRPC (a proxy's 502/503/504), the stream reset (RST_STREAM) or the
#: connection ended (GOAWAY) under the call, a non-OK status (UNAVAILABLE, INTERNAL,
#: CANCELLED, DEADLINE_EXCEEDED, any other), a stream that ended OK without its final
#: message, and a connection that ended after the answer began but before its grpc-status.
GRPC_ERRORS = (
    "grpc_http_status",
    "grpc_rst_stream",
    "grpc_goaway",
    "grpc_unavailable",
    "grpc_internal",
    "grpc_cancelled",
    "grpc_deadline",
    "grpc_status",
    "grpc_incomplete",
    "grpc_cut",
)

BODY_TAIL = 128  # bytes kept from the end of a body: where a stream says it is complete

BODY_LIMIT = 512  # bytes of body kept per request: enough for any Go/Envoy error text


@dataclass
class RequestRecord:
    """One measured request. Times are ``time.monotonic()`` and ``time.time()`` pairs.

    ``sent`` is when the request was fully written, ``headers`` when the status
    line and headers arrived, ``finished`` when the body ended or the request failed.
    """

    id: int
    batch: str
    url: str
    planned_at: float | None = None  # offset (s) from schedule start the request was due
    sent_mono: float | None = None
    sent_wall: float | None = None
    headers_mono: float | None = None
    headers_wall: float | None = None
    finished_mono: float | None = None
    finished_wall: float | None = None
    status: int | None = None
    body: str = ""  # first BODY_LIMIT bytes, decoded with replacement
    bytes_received: int = 0
    content_length: int | None = None  # as declared by the server
    body_ok: bool | None = None  # None: no expectation was set
    error: str | None = None  # one of TRANSPORT_ERRORS, None when the exchange completed
    error_detail: str | None = None
    pod: str | None = None
    revision: str | None = None
    server: str | None = None  # the Server response header (envoy, ...)
    kind: str = "http"  # "http" (one answer, streamed or not), "websocket" or "grpc" (a call)
    body_tail: str = ""  # last BODY_TAIL bytes of the body (streams end with their proof)
    # websocket sessions: messages written and echoed, the close frame the server sent
    messages_sent: int = 0
    messages_answered: int = 0
    close_code: int | None = None  # None: no close frame came (1006 in RFC 6455 terms)
    close_reason: str | None = None
    close_frame_mono: float | None = None  # the close frame's arrival; the TCP close trails it
    # gRPC calls: the status code's name (OK, UNAVAILABLE...), its details, messages read
    grpc_status: str | None = None
    grpc_message: str | None = None
    messages_received: int = 0

    @property
    def duration_s(self) -> float | None:
        if self.sent_mono is None or self.finished_mono is None:
            return None
        return self.finished_mono - self.sent_mono

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
