"""Verdict rules on records: classes, signatures, SLIs, accounting."""

import pytest

from pytest_knative_drain.records import RequestRecord
from pytest_knative_drain.verdict import check_slo, failure_table, judge, summarize


def rec(i: int = 0, **kw: object) -> RequestRecord:
    base = {"id": i, "batch": "batch-1", "url": "http://127.0.0.1:1/", "sent_mono": 1.0 + i / 1000}
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "cls", "signature"),
    [
        (rec(status=200, body="slept 10 ms", body_ok=True), "ok", None),
        (rec(status=502, body="EOF"), "http_5xx", "queue-proxy"),
        (rec(status=502, body="EOF", body_ok=False), "http_5xx", "queue-proxy"),
        (rec(status=502, body="unexpected EOF"), "http_5xx", "queue-proxy"),
        (rec(status=502, body="context canceled"), "http_5xx", "queue-proxy"),
        (
            rec(status=502, body="dial tcp 127.0.0.1:8080: connect: connection refused"),
            "http_5xx",
            "queue-proxy",
        ),
        (rec(status=504, body="request timeout"), "http_5xx", "queue-proxy"),
        (rec(status=503, body="context deadline exceeded"), "http_5xx", "activator"),
        (rec(status=503, body="no healthy upstream"), "http_5xx", "ingress"),
        (
            rec(status=503, body="upstream connect error or disconnect/reset before headers"),
            "http_5xx",
            "ingress",
        ),
        (rec(status=500, body="boom"), "http_5xx", "unknown"),
        (rec(status=404, body="nope"), "http_other", "unknown"),
        (rec(status=200, body="half", body_ok=False), "truncated", "unknown"),
        (rec(error="truncated", status=200), "truncated", "unknown"),
        (rec(error="reset"), "reset", "unknown"),
        (rec(error="empty_reply"), "empty_reply", "unknown"),
        (rec(error="refused"), "refused", "unknown"),
        (rec(error="timeout"), "timeout", "unknown"),
        (rec(error="protocol_error"), "protocol_error", "unknown"),
    ],
)
def test_judge(record: RequestRecord, cls: str, signature: str | None) -> None:
    j = judge(record)
    assert (j.cls, j.signature) == (cls, signature)
    assert (j.hint is None) == (cls == "ok")


def test_app_dropped_hint_names_the_fix() -> None:
    hint = judge(rec(status=502, body="EOF")).hint or ""
    assert "SIGTERM" in hint and "exec-form" in hint and "graceful" in hint


def test_strict_and_upstream_sli() -> None:
    records = [rec(i, status=200) for i in range(6)] + [
        rec(6, error="reset"),
        rec(7, error="refused"),
        rec(8, status=502, body="EOF"),
        rec(9, error="timeout"),
    ]
    s = summarize(records)
    assert (s.total, s.ok, s.failures) == (10, 6, 4)
    assert s.strict_sli == pytest.approx(0.6)
    # spoof retries reset/refused/timeout; the 502 still counts upstream
    assert s.upstream_sli == pytest.approx(0.9)
    assert s.classes == {"ok": 6, "http_5xx": 1, "reset": 1, "refused": 1, "timeout": 1}
    assert s.signatures == {"queue-proxy": 1, "unknown": 3}
    problems = check_slo(s)
    assert len(problems) == 1 and "0.6000 < 1.0" in problems[0]
    assert check_slo(s, min_strict_sli=0.5) == []


def test_missing_requests_fail_even_when_all_recorded_ones_pass() -> None:
    s = summarize([rec(i, status=200) for i in range(3)], planned=5)
    assert s.missing == 2 and s.failures == 2
    assert s.strict_sli == pytest.approx(0.6)
    assert any("never ran" in p for p in check_slo(s))


def test_start_skew_is_per_batch() -> None:
    records = [
        rec(0, status=200, sent_mono=10.0),
        rec(1, status=200, sent_mono=10.05),
        rec(2, status=200, sent_mono=40.0, batch="batch-2"),
        rec(3, status=200, sent_mono=40.01, batch="batch-2"),
    ]
    assert summarize(records).start_skew_s == pytest.approx(0.05)


def test_failure_table_groups() -> None:
    records = [rec(i, status=502, body="EOF") for i in range(3)] + [rec(9, error="reset")]
    table = failure_table(records)
    assert table[0]["count"] == 3 and table[0]["signature"] == "queue-proxy"
    assert table[1]["class"] == "reset"


def test_empty_run_is_vacuous_but_accounted() -> None:
    s = summarize([], planned=0)
    assert s.strict_sli == 1.0 and s.total == 0
