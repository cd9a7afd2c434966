"""One request record judged alone: its class, the component whose answer it carries
(its signature) and a hint, from the status, body, Server header and how it ended.

The vocabulary (CLASSES, SIGNATURES, HINTS) is the reports' and the tests'. Reading a
record against the pod's timeline is diagnosis.py; the SLIs and the SLO check verdict.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..load.records import GRPC_ERRORS, RequestRecord

CLASSES = (
    "ok",
    "http_5xx",
    "http_other",
    "reset",
    "empty_reply",
    "refused",
    "timeout",
    "truncated",
    "protocol_error",
    # websocket sessions (ws_load.py): how a session ended when it was not a close 1000 by
    # the app with every message answered
    "ws_abnormal_close",
    "ws_reset",
    "ws_handshake_refused",
    "ws_close_code",
    "ws_unanswered",
    # gRPC calls (load/grpc.py): a proxy's HTTP error instead of gRPC, the stream reset or
    # the connection gone under the call, a non-OK status, a stream without its final message
    *GRPC_ERRORS,
)
SIGNATURES = ("queue-proxy", "activator", "ingress", "unknown")

#: Transport failures that Knative's test client (knative/pkg test/spoof) silently
#: retries for up to 5 minutes, when they end the round trip before any response byte;
#: the upstream-equivalent SLI does not count them (see ``upstream_retried``).
UPSTREAM_RETRIED = frozenset({"refused", "reset", "empty_reply", "timeout"})


def upstream_retried(record: RequestRecord, cls: str) -> bool:
    """Would Knative's spoof client have sent this request again and never seen it fail?

    spoof retries the round trip on a timeout, refused, reset or EOF: an error before the
    response's headers. Once headers (or any byte) came, the failure is a read error of the
    body the test itself sees, and a 5xx is an answer: neither is retried. A websocket
    session is no spoof round trip at all.
    """
    return (
        cls in UPSTREAM_RETRIED
        and record.kind == "http"
        and record.headers_mono is None
        and record.status is None
        and not record.bytes_received
    )


# What Knative and Envoy write as error bodies, read in the sources (knative/serving tags
# knative-v1.10.0, v1.14.2, v1.17.0, v1.19.0, v1.23.0 and main; knative/pkg at the commit each
# pins; envoyproxy/envoy source/common/router/router.cc). ``http.Error`` adds a trailing
# newline, stripped before matching.
#
# - queue-proxy's reverse proxy (pkg/queue/sharedmain/handlers.go, main.go from 1.21) uses
#   knative/pkg ``network/handlers.Error`` = ``network.ErrorHandler`` (network/error_handler.go):
#   ``http.Error(w, err.Error(), 502)``, so the body is the Go transport error: ``EOF``,
#   ``unexpected EOF``, ``dial tcp 127.0.0.1:PORT: connect: connection refused``,
#   ``read tcp A->B: read: connection reset by peer``, ``context canceled`` (from 1.20, the
#   knative/pkg it pins returns without writing anything on ``context.Canceled``).
# - The activator's proxy (pkg/activator/handler/handler.go ``proxyRequest``) uses the SAME
#   ``pkghandler.Error``: a 502 ``EOF`` reads the same whether queue-proxy lost the app or the
#   activator lost queue-proxy. Only errors that name an address separate them: queue-proxy
#   only ever dials 127.0.0.1:USER_PORT, the activator dials pod IPs (:8012, :8112 with TLS).
# - queue-proxy's timeout handler: 504 ``request timeout``; the activator's
#   (cmd/activator/main.go): 504 ``activator request timeout``.
# - The activator's throttler (handler.go ``ServeHTTP``): 503 ``context deadline exceeded`` or
#   ``pending request queue full`` (pkg/queue/breaker.go ``ErrRequestQueueFull``); other
#   throttler errors are a bare 500 with no body. queue-proxy's own breaker
#   (pkg/queue/handler.go) writes the same two 503 texts, but only with containerConcurrency
#   > 0; the activator is the default reading.
# - The activator's context handler (context_handler.go ``sendError``): 404/500
#   ``Error getting active endpoint: ...``.
# - Envoy's own local replies (router.cc): 503 (502 on a protocol error) ``upstream connect
#   error or disconnect/reset before headers. [retried and the latest ]reset reason: ...``,
#   503 ``no healthy upstream``, 504 ``upstream request timeout``, ``upstream max stream
#   duration reached``.
_GO_PROXY_ERROR = re.compile(
    r"^(EOF|unexpected EOF|context canceled|dial tcp |read tcp |write tcp |"
    r"http: server closed idle connection|net/http: |readfrom tcp )"
)
# The upstream address in a Go net error: "dial tcp HOST:PORT: ...", "read tcp L->HOST:PORT: ...".
_GO_UPSTREAM = re.compile(r"^(?:dial|read|write|readfrom) tcp (?:\S+->)?(?P<addr>\S+):\s")
_QP_TIMEOUT = "request timeout"
_ACTIVATOR_TIMEOUT = "activator request timeout"
_THROTTLER_503 = ("context deadline exceeded", "pending request queue full")
_ACTIVATOR_NO_ENDPOINT = "Error getting active endpoint: "
_ENVOY_RESET = "upstream connect error or disconnect/reset before headers"
_ENVOY_NO_UPSTREAM = "no healthy upstream"
_ENVOY_TIMEOUT = ("upstream request timeout", "upstream max stream duration reached")

HINTS = {
    "app_dropped": (
        "app dropped the in-flight request after SIGTERM: use an exec-form CMD so the "
        "server is PID 1, and a graceful timeout (gunicorn --graceful-timeout) longer "
        "than the longest request"
    ),
    "app_gone": (
        "nothing listened on the user port: the app had exited (or not started) while "
        "queue-proxy still routed to it"
    ),
    "canceled": "the request was cancelled while queue-proxy proxied it",
    "qp_timeout": (
        "request outlived the revision's timeoutSeconds: raise timeoutSeconds "
        "(and max-revision-timeout-seconds)"
    ),
    "qp_other": "queue-proxy could not complete the request to the app",
    "activator": (
        "the activator gave up: no ready pod in time or queue full; check the activator's "
        "terminationGracePeriodSeconds >= max-revision-timeout-seconds"
    ),
    "activator_upstream": (
        "the activator lost queue-proxy: the pod (or its queue-proxy) was gone while the "
        "activator still routed to it"
    ),
    "activator_timeout": (
        "request outlived the revision's timeoutSeconds in the activator: raise "
        "timeoutSeconds (and max-revision-timeout-seconds)"
    ),
    "activator_no_endpoint": (
        "the activator could not resolve the revision (deleted, or not yet in its cache)"
    ),
    "ingress": "the ingress had no healthy upstream (endpoints removed before traffic moved)",
    "ingress_reset": (
        "the ingress lost its upstream before headers: the activator or queue-proxy refused "
        "or closed the connection (pod gone, or proxy killed)"
    ),
    "ingress_timeout": "the ingress's own route timeout ran out before the upstream answered",
    "envoy_header": (
        "only the Server header says envoy, and Envoy sets it on every response it proxies: "
        "the body names no component, so the ingress is a guess"
    ),
    "refused": "connection refused: no proxy listened (pod or proxy already gone)",
    "cut": (
        "connection cut without an HTTP answer: the proxy in front was killed "
        "(pod grace period ran out, SIGKILL) while the request was in flight"
    ),
    "qp_exited": (
        "queue-proxy ended before its in-flight requests: it exited while the user container "
        "was still running and serving them (a queue-proxy that stops without shutting its "
        "server down gracefully; Knative 1.1.0-1.9.2, knative/serving#13720)"
    ),
    "qp_exited_ws": (
        "queue-proxy ended with websocket sessions open: its http.Server.Shutdown neither "
        "waits for nor closes hijacked connections, so it exits at the end of its drain and "
        "cuts them while the app still serves them (knative/serving#15759, fixed by #16362 "
        "in 1.22.0)"
    ),
    "activator_exited": (
        "the activator proxying this long-lived connection exited (its pod deleted: a 45 s "
        "drain, then Shutdown) and cut it: http.Server.Shutdown neither waits for nor closes "
        "hijacked connections (websockets, h2c), so they end with the process"
    ),
    "qp_exited_h2c": (
        "queue-proxy ended with gRPC calls in flight: its h2c connections are hijacked from "
        "http.Server, whose Shutdown neither waits for nor closes them, so it exits at the end "
        "of its drain and cuts them while the app still serves them (Knative <= 1.21; 1.22.0's "
        "knative/serving#16362 waits for them, at most 60 s after the drain)"
    ),
    "app_cut_stream": (
        "the app ended the connection mid-stream (it exited, or was killed, after SIGTERM) "
        "and queue-proxy could only pass the cut on: finish streams before exiting, with a "
        "graceful timeout above the longest stream"
    ),
    "app_cut_ws": (
        "the app's process ended with the websocket open and sent no close frame: on SIGTERM "
        "answer what is in flight and close each session with 1000, then exit"
    ),
    "qp_held": (
        "queue-proxy held the response open after the app had ended it, until it was killed "
        "at the end of the grace period (with responseStartTimeoutSeconds: Knative "
        "1.7-1.18, knative/serving#15352, fixed by #15899 in 1.19.0)"
    ),
    "exits_together": (
        "queue-proxy and the app ended in the same pod status update (kubelet reports them "
        "together, to the second): which of the two cut the session cannot be told here; "
        "--platform=local orders them to the millisecond"
    ),
    "ws_handshake_refused": (
        "the websocket upgrade was not answered with 101: the app or a proxy in front "
        "refused it (shutting down, gone, or not a websocket route)"
    ),
    "ws_close_code": "the server closed the session with a close code other than 1000",
    "ws_unanswered": (
        "the server closed with 1000 but left messages it had received unanswered: answer "
        "what is in flight before closing"
    ),
    "ws_cut": "websocket session ended without a close frame (1006) or by a reset",
    "ws_timeout": "the app never closed the websocket session within the client's hold time",
    "grpc_cut": (
        "the gRPC call ended without its answer (stream reset, connection closed or GOAWAY, "
        "UNAVAILABLE): a proxy or the app ended the connection under it"
    ),
    "app_cut_grpc": (
        "the app ended the call in flight (it exited, or stopped without waiting) after "
        "SIGTERM and queue-proxy could only pass the cut on: drain with GracefulStop "
        "(grpc-go) or server.stop(grace) above the longest call (grpcio)"
    ),
    "grpc_deadline": "the call outlived its gRPC deadline",
    "grpc_status": "the server ended the call with a non-OK gRPC status",
    "grpc_incomplete": (
        "the stream ended with status OK but without its final message: cut where nothing "
        "could say so"
    ),
    "timeout": "no complete answer within the client timeout",
    "truncated": "body shorter than declared or not the expected body: the answer was cut",
    "protocol": "malformed HTTP answer",
    "http_5xx": "server error from an unrecognised component",
    "http_other": "unexpected non-2xx status",
}


@dataclass(frozen=True)
class Judgement:
    """What one record means."""

    cls: str
    signature: str | None  # None for ok
    hint: str | None
    event: Any = field(default=None, compare=False)  # the pod event that explains it, if read


def judge(record: RequestRecord) -> Judgement:
    """Classify one request and name the component that cut it."""
    if record.kind == "websocket":
        return _judge_websocket(record)
    if record.kind == "grpc":
        return _judge_grpc(record)
    body = (record.body or "").strip()
    status_2xx = record.status is not None and 200 <= record.status < 300
    if record.error == "truncated" or (status_2xx and record.body_ok is False):
        return Judgement("truncated", _signature_from_server(record), HINTS["truncated"])
    if record.error is not None:
        cls = record.error if record.error in CLASSES else "protocol_error"
        hint = {
            "refused": HINTS["refused"],
            "reset": HINTS["cut"],
            "empty_reply": HINTS["cut"],
            "timeout": HINTS["timeout"],
        }.get(cls, HINTS["protocol"])
        return Judgement(cls, "unknown", hint)
    status = record.status or 0
    if 200 <= status < 300:
        return Judgement("ok", None, None)
    cls = "http_5xx" if status >= 500 else "http_other"
    return Judgement(cls, *_signature_of_answer(status, body, record))


def _judge_websocket(record: RequestRecord) -> Judgement:
    """A websocket session: ok only when the app closed it with 1000, all answered."""
    if record.error is None:
        return Judgement("ok", None, None)
    if record.error == "ws_handshake_refused":
        status = record.status or 0
        body = (record.body or "").strip()
        if status >= 500:
            return Judgement("ws_handshake_refused", *_signature_5xx(status, body, record.server))
        by_body = _signature_from_body(status, body) if status else None
        if by_body is not None:
            return Judgement("ws_handshake_refused", *by_body)
        sig = "ingress" if _is_envoy(record.server) else "unknown"
        return Judgement("ws_handshake_refused", sig, HINTS["ws_handshake_refused"])
    hint = {
        "ws_abnormal_close": HINTS["ws_cut"],
        "ws_reset": HINTS["ws_cut"],
        "ws_close_code": HINTS["ws_close_code"],
        "ws_unanswered": HINTS["ws_unanswered"],
        "timeout": HINTS["ws_timeout"],
        "refused": HINTS["refused"],
        "reset": HINTS["cut"],
        "empty_reply": HINTS["cut"],
    }.get(record.error, HINTS["protocol"])
    cls = record.error if record.error in CLASSES else "protocol_error"
    return Judgement(cls, "unknown", hint)


def _judge_grpc(record: RequestRecord) -> Judgement:
    """A gRPC call: ok only with status OK and, for a stream, its final message.

    A proxy's HTTP answer instead of gRPC (queue-proxy's 502 ``EOF``, Envoy's 503) keeps
    its status, body and Server header and is signed exactly as for HTTP. Every other
    failure names nobody by itself: the timeline says who (diagnosis.py).
    """
    if record.error is None:
        return Judgement("ok", None, None)
    cls = record.error if record.error in CLASSES else "protocol_error"
    if cls == "grpc_http_status":
        body = (record.body or "").strip()
        return Judgement(cls, *_signature_of_answer(record.status or 0, body, record))
    hint = {
        "grpc_deadline": HINTS["grpc_deadline"],
        "grpc_status": HINTS["grpc_status"],
        "grpc_incomplete": HINTS["grpc_incomplete"],
        "timeout": HINTS["timeout"],
        "refused": HINTS["refused"],
    }.get(cls, HINTS["grpc_cut"])
    return Judgement(cls, "unknown", hint)


def _signature_of_answer(status: int, body: str, record: RequestRecord) -> tuple[str, str]:
    """Who wrote a non-2xx HTTP answer (a request's, or a proxy's instead of gRPC): its body
    names the component, then ``server: envoy`` as a guess."""
    if status >= 500:
        return _signature_5xx(status, body, record.server)
    by_body = _signature_from_body(status, body)
    return by_body or (_signature_from_server(record), HINTS["http_other"])


def _signature_5xx(status: int, body: str, server: str | None) -> tuple[str, str]:
    """The body decides; ``server: envoy`` is a fallback only (Envoy overwrites it on all)."""
    by_body = _signature_from_body(status, body)
    if by_body is not None:
        return by_body
    if _is_envoy(server):
        return "ingress", HINTS["envoy_header"]
    return "unknown", HINTS["http_5xx"]


def _signature_from_body(status: int, body: str) -> tuple[str, str] | None:
    """Name the component whose own error text ``body`` is, or None when it names none.

    The bodies are listed, with where they come from, above ``_GO_PROXY_ERROR``.
    """
    if body.startswith(_ENVOY_RESET):
        return "ingress", HINTS["ingress_reset"]
    if body.startswith(_ENVOY_NO_UPSTREAM):
        return "ingress", HINTS["ingress"]
    if body.startswith(_ENVOY_TIMEOUT):
        return "ingress", HINTS["ingress_timeout"]
    if body.startswith(_ACTIVATOR_NO_ENDPOINT):
        return "activator", HINTS["activator_no_endpoint"]
    if status == 502 and _GO_PROXY_ERROR.match(body):
        return _signature_go_proxy_error(body)
    if status == 504 and body == _ACTIVATOR_TIMEOUT:
        return "activator", HINTS["activator_timeout"]
    if status == 504 and body == _QP_TIMEOUT:
        return "queue-proxy", HINTS["qp_timeout"]
    if status == 503 and body in _THROTTLER_503:
        return "activator", HINTS["activator"]
    return None


def _signature_go_proxy_error(body: str) -> tuple[str, str]:
    """A 502 written by knative/pkg's proxy error handler.

    queue-proxy and the activator share that handler, so ``EOF``, ``unexpected EOF`` and
    ``context canceled`` cannot say which proxy wrote them: they default to queue-proxy,
    the one that meets the app's SIGTERM (behind the activator it may be the activator
    losing queue-proxy; the pod timeline tells). An error naming its upstream address does
    tell: queue-proxy only dials 127.0.0.1, the activator dials pod IPs.
    """
    upstream = _GO_UPSTREAM.match(body)
    if upstream is not None and not _is_loopback(upstream.group("addr")):
        return "activator", HINTS["activator_upstream"]
    if "connection refused" in body:
        return "queue-proxy", HINTS["app_gone"]
    if body.startswith("context canceled"):
        return "queue-proxy", HINTS["canceled"]
    return "queue-proxy", HINTS["app_dropped"]


def _is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _is_envoy(server: str | None) -> bool:
    return (server or "").strip().lower() == "envoy"


def _signature_from_server(record: RequestRecord) -> str:
    """Signature of a non-5xx failure: a Knative body first, then ``server: envoy``."""
    if record.status is not None and not 200 <= record.status < 300:
        by_body = _signature_from_body(record.status, (record.body or "").strip())
        if by_body is not None:
            return by_body[0]
    return "ingress" if _is_envoy(record.server) else "unknown"
