"""Verdict rules on records: classes, signatures, SLIs, accounting."""

import evidence_reports
import pytest

from pytest_knative_drain.load.records import RequestRecord
from pytest_knative_drain.run.verdict import check_slo, failure_table, judge, summarize


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


# Envoy overwrites the Server header of every response it proxies (net-kourier can only turn
# that off from 1.17, default off): through Kourier every answer carries ``server: envoy``.
ENVOY = "envoy"


@pytest.mark.parametrize(
    ("status", "body", "signature"),
    [
        # queue-proxy's knative/pkg error handler: the Go error as body
        (502, "EOF\n", "queue-proxy"),
        (502, "unexpected EOF", "queue-proxy"),
        (502, "dial tcp 127.0.0.1:8080: connect: connection refused", "queue-proxy"),
        (
            502,
            "read tcp 127.0.0.1:41234->127.0.0.1:8080: read: connection reset by peer",
            "queue-proxy",
        ),
        (504, "request timeout", "queue-proxy"),
        # the activator: same error handler, but it dials pod IPs; its own timeout and throttler
        (502, "dial tcp 10.244.1.7:8012: connect: connection refused", "activator"),
        (
            502,
            "read tcp 10.244.0.5:43210->10.244.1.7:8012: read: connection reset by peer",
            "activator",
        ),
        (504, "activator request timeout", "activator"),
        (503, "context deadline exceeded\n", "activator"),
        (503, "pending request queue full\n", "activator"),
        # Envoy's own answers
        (503, "no healthy upstream", "ingress"),
        (
            503,
            "upstream connect error or disconnect/reset before headers. "
            "reset reason: connection termination",
            "ingress",
        ),
        (504, "upstream request timeout", "ingress"),
        # a body that names nobody: only then does the header count
        (500, "boom", "ingress"),
    ],
)
def test_5xx_through_envoy_is_judged_by_body(status: int, body: str, signature: str) -> None:
    j = judge(rec(status=status, body=body, server=ENVOY))
    assert (j.cls, j.signature) == ("http_5xx", signature)


def test_envoy_header_fallback_says_it_is_a_guess() -> None:
    hint = judge(rec(status=500, body="boom", server=ENVOY)).hint or ""
    assert "Server header" in hint
    assert judge(rec(status=500, body="boom")).signature == "unknown"


def test_activator_timeout_is_not_queue_proxys() -> None:
    j = judge(rec(status=504, body="activator request timeout"))
    assert j.signature == "activator" and "timeoutSeconds" in (j.hint or "")


def test_non_5xx_and_truncated_knative_bodies_through_envoy() -> None:
    missing = rec(
        status=404, body='Error getting active endpoint: revision "r" not found', server=ENVOY
    )
    assert judge(missing).signature == "activator"
    cut = rec(status=502, body="EOF", error="truncated", server=ENVOY)
    assert (judge(cut).cls, judge(cut).signature) == ("truncated", "queue-proxy")
    # the app's own half body carries no component name: the header stays the fallback
    half = rec(status=200, body="half", body_ok=False, server=ENVOY)
    assert judge(half).signature == "ingress"
    assert judge(rec(status=404, body="nope", server=ENVOY)).signature == "ingress"


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


def test_upstream_sli_excludes_only_cuts_before_any_response_byte() -> None:
    """spoof retries a round trip that failed before its headers; a stream cut or timed out
    after its headers and body lines is an error the upstream test itself would see."""
    before = [rec(0, error="timeout"), rec(1, error="empty_reply"), rec(2, error="reset")]
    after = [
        rec(3, error="timeout", status=200, headers_mono=2.0, bytes_received=683),
        rec(4, error="reset", status=200, headers_mono=2.0, bytes_received=10),
    ]
    s = summarize(before + after)
    assert s.strict_sli == 0.0
    assert s.upstream_sli == pytest.approx(3 / 5)
    websocket = rec(5, error="reset", kind="websocket")  # no spoof round trip at all
    assert summarize([websocket]).upstream_sli == 0.0


def _report_records(path: str, scenario: str, config: str, app: str) -> list[RequestRecord]:
    return evidence_reports.records(evidence_reports.case(path, scenario, config, app))


def test_upstream_sli_of_streams_cut_after_their_lines_on_a_real_cluster_is_zero() -> None:
    """kind, Knative 1.14.2: 20 streams got headers and every line, then no end until the
    client's timeout (response-start-timeout bug). The report of that run said upstream
    1.000; Knative's client would have failed every one."""
    records = _report_records(
        "2026-12-01-kind-1.14-concurrent/kind/drain-report.json",
        "streaming-long",
        "response-start-timeout",
        "go-shutdown",
    )
    assert len(records) == 20 and all(r.error == "timeout" and r.headers_mono for r in records)
    s = summarize(records)
    assert (s.strict_sli, s.upstream_sli) == (0.0, 0.0)


def test_upstream_sli_still_excludes_empty_replies_on_a_real_run() -> None:
    """local, Knative 1.7.0: queue-proxy closed 50 connections before any answer; spoof
    would have resent them, so the upstream-equivalent figure stays 1.0 beside strict 0."""
    records = _report_records(
        "2026-12-01-local-replay/local-1.7.0/drain-report.json",
        "pod-delete-long",
        "default",
        "go-shutdown",
    )
    s = summarize(records)
    assert s.classes == {"empty_reply": 50}
    assert (s.strict_sli, s.upstream_sli) == (0.0, 1.0)
