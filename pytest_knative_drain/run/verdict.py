"""The verdict over a case's records: SLIs and the SLO check.

Shaped after Knative's test/prober.go: ``summarize`` is ``SLI()``, ``check_slo`` is
``CheckSLO()``. Works on plain ``RequestRecord`` lists, no pytest. Each record is judged
alone by judge.py and read against the pod's timeline by diagnosis.py; their names are
re-exported here (``verdict.judge``, ``verdict.diagnose``, ``verdict.HINTS``) for callers
that read a verdict whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..load.records import RequestRecord
from .diagnosis import attribute, diagnose, explaining_event, record_verdict
from .judge import (
    CLASSES,
    HINTS,
    SIGNATURES,
    UPSTREAM_RETRIED,
    Judgement,
    judge,
    upstream_retried,
)

__all__ = [
    "CLASSES",
    "HINTS",
    "SIGNATURES",
    "UPSTREAM_RETRIED",
    "Judgement",
    "Summary",
    "attribute",
    "check_slo",
    "diagnose",
    "explaining_event",
    "failure_table",
    "judge",
    "record_verdict",
    "start_skew",
    "summarize",
    "upstream_retried",
]


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


def summarize(
    records: Sequence[RequestRecord], planned: int | None = None, events: Sequence[Any] = ()
) -> Summary:
    """Strict SLI counts every failure and every missing request; upstream SLI
    excludes transport errors that Knative's spoof client would have retried (those
    before any response byte: ``upstream_retried``).
    ``events``: the pod's timeline, for ``diagnose``."""
    planned = len(records) if planned is None else planned
    judgements = [diagnose(r, events) for r in records]
    classes = Counter(j.cls for j in judgements)
    signatures = Counter(j.signature for j in judgements if j.cls != "ok")
    ok = classes.get("ok", 0)
    failures = len(records) - ok
    denominator = max(planned, len(records))
    missing = denominator - len(records)
    retried = sum(upstream_retried(r, j.cls) for r, j in zip(records, judgements, strict=True))
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


def failure_table(
    records: Sequence[RequestRecord], limit: int = 20, events: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """The failed requests, grouped by (class, signature, hint, body), most frequent first."""
    groups: Counter[tuple[str, str | None, str | None, str]] = Counter()
    for r in records:
        j = diagnose(r, events)
        if j.cls != "ok":
            detail = (r.body or r.error_detail or "").strip()[:80]
            groups[(j.cls, j.signature, j.hint, detail)] += 1
    return [
        {"count": n, "class": c, "signature": s, "detail": d, "hint": h}
        for (c, s, h, d), n in groups.most_common(limit)
    ]
