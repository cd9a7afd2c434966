"""Judge request records: class, signature and hint per request; SLIs and the SLO check.

Shaped after Knative's test/prober.go: ``summarize`` is ``SLI()``,
``check_slo`` is ``CheckSLO()``. Works on plain ``RequestRecord`` lists, no pytest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import RequestRecord

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
)
SIGNATURES = ("queue-proxy", "activator", "ingress", "unknown")

#: Transport failures that Knative's test client (knative/pkg test/spoof) silently
#: retries for up to 5 minutes; the upstream-equivalent SLI does not count them.
UPSTREAM_RETRIED = frozenset({"refused", "reset", "empty_reply", "timeout"})

# Go error texts that knative/pkg network/error_handler.go writes as a 502 body.
_GO_PROXY_ERROR = re.compile(
    r"^(EOF|unexpected EOF|context canceled|dial tcp |read tcp |write tcp |"
    r"http: server closed idle connection|net/http: |readfrom tcp )"
)
_ENVOY = re.compile(r"upstream connect error|no healthy upstream|upstream request timeout")
_ACTIVATOR_503 = re.compile(
    r"context deadline exceeded|pending request queue full|overload|activator", re.I
)

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
    "ingress": "the ingress had no healthy upstream (endpoints removed before traffic moved)",
    "refused": "connection refused: no proxy listened (pod or proxy already gone)",
    "cut": (
        "connection cut without an HTTP answer: the proxy in front was killed "
        "(pod grace period ran out, SIGKILL) while the request was in flight"
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


def judge(record: RequestRecord) -> Judgement:
    """Classify one request and name the component that cut it."""
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
    if status >= 500:
        return Judgement("http_5xx", *_signature_5xx(status, body, record.server))
    return Judgement("http_other", _signature_from_server(record), HINTS["http_other"])


def _signature_5xx(status: int, body: str, server: str | None) -> tuple[str, str]:
    if _ENVOY.search(body) or (server or "").lower() == "envoy":
        return "ingress", HINTS["ingress"]
    if status == 502 and _GO_PROXY_ERROR.match(body):
        if "connection refused" in body:
            return "queue-proxy", HINTS["app_gone"]
        if body.startswith("context canceled"):
            return "queue-proxy", HINTS["canceled"]
        return "queue-proxy", HINTS["app_dropped"]
    if status == 504 and "request timeout" in body:
        return "queue-proxy", HINTS["qp_timeout"]
    if status == 503 and _ACTIVATOR_503.search(body):
        return "activator", HINTS["activator"]
    return "unknown", HINTS["http_5xx"]


def _signature_from_server(record: RequestRecord) -> str:
    return "ingress" if (record.server or "").lower() == "envoy" else "unknown"


@dataclass
class Summary:
    """Counts and SLIs for a set of records (the prober's ``SLI()``)."""

    planned: int
    total: int
    ok: int
    failures: int
    strict_sli: float
    upstream_sli: float
    start_skew_s: float | None
    classes: dict[str, int]
    signatures: dict[str, int]
    batches: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        """Planned requests with no record: never accounted for."""
        return max(self.planned - self.total, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "total": self.total,
            "missing": self.missing,
            "ok": self.ok,
            "failures": self.failures,
            "strict_sli": self.strict_sli,
            "upstream_sli": self.upstream_sli,
            "start_skew_s": self.start_skew_s,
            "classes": self.classes,
            "signatures": self.signatures,
            "batches": self.batches,
        }


def start_skew(records: Iterable[RequestRecord], batch: str | None = None) -> float | None:
    """Seconds between the first and last request written (within one batch if named)."""
    sent = [r.sent_mono for r in records if r.sent_mono is not None and batch in (None, r.batch)]
    return max(sent) - min(sent) if sent else None


def summarize(records: Sequence[RequestRecord], planned: int | None = None) -> Summary:
    """Strict SLI counts every failure and every missing request; upstream SLI
    excludes transport errors that Knative's spoof client would have retried."""
    planned = len(records) if planned is None else planned
    judgements = [judge(r) for r in records]
    classes = Counter(j.cls for j in judgements)
    signatures = Counter(j.signature for j in judgements if j.cls != "ok")
    ok = classes.get("ok", 0)
    failures = len(records) - ok
    denominator = max(planned, len(records))
    missing = denominator - len(records)
    retried = sum(classes.get(c, 0) for c in UPSTREAM_RETRIED)
    strict = ok / denominator if denominator else 1.0
    upstream = (ok + retried) / denominator if denominator else 1.0
    batches: dict[str, dict[str, int]] = {}
    for r, j in zip(records, judgements, strict=True):
        per = batches.setdefault(r.batch, {"total": 0, "ok": 0})
        per["total"] += 1
        per["ok"] += j.cls == "ok"
    skews = [s for b in batches if (s := start_skew(records, b)) is not None]
    return Summary(
        planned=denominator,
        total=len(records),
        ok=ok,
        failures=failures + missing,
        strict_sli=strict,
        upstream_sli=upstream,
        start_skew_s=max(skews) if skews else None,
        classes={c: classes[c] for c in CLASSES if classes.get(c)},
        signatures={s: signatures[s] for s in SIGNATURES if signatures.get(s)},
        batches=batches,
    )


def check_slo(summary: Summary, min_strict_sli: float = 1.0) -> list[str]:
    """The prober's ``CheckSLO()``: an empty list means the SLO holds, else the reasons."""
    problems = []
    if summary.missing:
        problems.append(f"{summary.missing} of {summary.planned} planned requests never ran")
    if summary.strict_sli < min_strict_sli:
        detail = ", ".join(f"{c}={n}" for c, n in summary.classes.items() if c != "ok")
        cut_by = ", ".join(f"{s}={n}" for s, n in summary.signatures.items())
        problems.append(
            f"strict SLI {summary.strict_sli:.4f} < {min_strict_sli} "
            f"({summary.failures} failed: {detail}; cut by: {cut_by or 'none'}; "
            f"upstream-equivalent {summary.upstream_sli:.4f})"
        )
    return problems


def failure_table(records: Sequence[RequestRecord], limit: int = 20) -> list[dict[str, Any]]:
    """The failed requests, grouped by (class, signature, hint, body), most frequent first."""
    groups: Counter[tuple[str, str | None, str | None, str]] = Counter()
    for r in records:
        j = judge(r)
        if j.cls != "ok":
            detail = (r.body or r.error_detail or "").strip()[:80]
            groups[(j.cls, j.signature, j.hint, detail)] += 1
    return [
        {"count": n, "class": c, "signature": s, "detail": d, "hint": h}
        for (c, s, h, d), n in groups.most_common(limit)
    ]
