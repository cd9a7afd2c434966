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
