"""The load engine against real loopback servers that misbehave on purpose.

Every error class is produced on a real socket and asserted exactly; the servers
count what they received, which proves a failed request is reported, never resent.
"""

from __future__ import annotations

import threading
import time

import pytest
from misbehaving_servers import LoopbackServer, refused_url

from pytest_knative_drain.load import (
    Batch,
    Event,
    run_batch,
    run_schedule_sync,
)
from pytest_knative_drain.load.records import BODY_LIMIT, RequestRecord
from pytest_knative_drain.run import verdict


def _ordered(rec: RequestRecord) -> None:
    """sent <= headers <= finished on both clocks, whichever were reached."""
    for clock in ("mono", "wall"):
        stamps = [getattr(rec, f"{k}_{clock}") for k in ("sent", "headers", "finished")]
        reached = [s for s in stamps if s is not None]
        assert reached == sorted(reached), (clock, stamps)
    assert rec.finished_mono is not None


def test_ok_records_every_fact() -> None:
    with LoopbackServer("ok", pod="pod-x", revision="rev-7") as srv:
        result = run_batch(srv.url + "?sleep=200", 5, expect_body="slept 200 ms")
    assert srv.requests == 5 and srv.connections == 5
    assert result.planned == 5 and [r.id for r in result.records] == list(range(5))
    for rec in result.records:
        _ordered(rec)
        assert rec.error is None and rec.status == 200
        assert rec.body == "slept 200 ms on pod-x\n" and rec.body_ok is True
        assert rec.content_length == rec.bytes_received == len(rec.body)
        assert (rec.pod, rec.revision, rec.server) == ("pod-x", "rev-7", "misbehaving")
        assert rec.planned_at == 0.0 and rec.batch == "load"
        assert 0.2 <= rec.duration_s < 1.0
        assert abs((rec.sent_wall - rec.sent_mono) - (rec.finished_wall - rec.finished_mono)) < 0.05
    assert verdict.summarize(result.records).classes == {"ok": 5}


@pytest.mark.parametrize(
    ("behaviour", "error", "status", "detail"),
    [
        ("reset", "reset", None, "Connection reset by peer"),
        ("close", "empty_reply", None, "before any response byte"),
        ("truncate", "truncated", 200, "received 10 bytes, expected 100"),
        ("truncate_reset", "truncated", 200, "body cut: ConnectionResetError"),
        ("reset_unframed", "reset", 200, "Connection reset by peer"),
        ("garbage", "protocol_error", None, "illegal status line"),
    ],
)
def test_each_transport_error_from_a_real_server(
    behaviour: str, error: str, status: int | None, detail: str
) -> None:
    # ?sleep puts the failure mid-request, as when a pod dies with the request in flight
    with LoopbackServer(behaviour) as srv:
        result = run_batch(srv.url + "?sleep=150", 4)
    assert srv.requests == 4  # each sent once, none resent
    assert [r.error for r in result.records] == [error] * 4
    for rec in result.records:
        _ordered(rec)
        assert rec.status == status
        assert detail in (rec.error_detail or "")
        assert rec.sent_mono is not None and rec.duration_s >= 0.15
        assert verdict.judge(rec).cls == error
    if status is not None:  # the head arrived: what was received is kept
        assert all(r.body == "0123456789" and r.bytes_received == 10 for r in result.records)
    assert verdict.summarize(result.records).classes == {error: 4}


def test_refused() -> None:
    with refused_url() as url:
        result = run_batch(url, 3)
    for rec in result.records:
        assert rec.error == "refused" and "ConnectionRefusedError" in rec.error_detail
        assert rec.planned_at == 0.0 and rec.sent_mono is None and rec.finished_mono is not None
        assert verdict.judge(rec).cls == "refused"


def test_queue_proxy_502_is_a_response_not_a_transport_error() -> None:
    with LoopbackServer("bad_gateway") as srv:
        result = run_batch(srv.url, 3, expect_body="slept")
    for rec in result.records:
        assert rec.error is None and rec.status == 502 and rec.body == "EOF"
        assert rec.content_length == 3 and rec.body_ok is False
        j = verdict.judge(rec)
        assert (j.cls, j.signature) == ("http_5xx", "queue-proxy")


def test_expected_body_missing_on_200_is_flagged() -> None:
    with LoopbackServer("ok") as srv:
        result = run_batch(srv.url, 2, expect_body="this text is not in the body")
    assert all(r.status == 200 and r.body_ok is False for r in result.records)
    assert all(verdict.judge(r).cls == "truncated" for r in result.records)


@pytest.mark.parametrize("behaviour", ["close", "reset"])
def test_a_failed_request_is_reported_not_resent(behaviour: str) -> None:
    with LoopbackServer(behaviour) as srv:
        result = run_batch(srv.url, 25)
    assert srv.requests == 25 and srv.connections == 25
    assert len(result.records) == 25 and all(r.error is not None for r in result.records)


def test_stale_keepalive_fails_once_and_is_not_retried() -> None:
    """Server says keep-alive, then closes (knative/serving#12414).

    Each slot: request 1 ok; request 2 goes out on the dead connection and fails;
    request 3 opens a new connection. aiohttp would silently resend request 2.
    """
    with LoopbackServer("ok", lie_keepalive=True) as srv:
        result = run_schedule_sync(srv.url, [Batch("b", 9, concurrency=3)], reuse_connections=True)
    by_id = {r.id: r for r in result.records}
    assert all(by_id[i].status == 200 and by_id[i].error is None for i in (0, 1, 2, 6, 7, 8))
    assert all(by_id[i].error in ("empty_reply", "reset") for i in (3, 4, 5))
    assert (srv.connections, srv.requests) == (6, 6)  # the failed three never resent


def test_reuse_keeps_one_connection_per_slot() -> None:
    with LoopbackServer("ok") as srv:
        reused = run_schedule_sync(
            srv.url + "?sleep=50", [Batch("b", 8, concurrency=2)], reuse_connections=True
        )
    assert (srv.connections, srv.requests) == (2, 8)
    assert all(r.status == 200 for r in reused.records)
    with LoopbackServer("ok") as srv:
        fresh = run_schedule_sync(srv.url + "?sleep=50", [Batch("b", 8, concurrency=2)])
    assert (srv.connections, srv.requests) == (8, 8)
    assert all(b"connection: close" in h.lower() for h in srv.heads)
    # sequential slots: each request planned when its slot became free
    planned = sorted(r.planned_at for r in fresh.records)
    assert planned[:2] == [0.0, 0.0] and planned[-1] >= 0.15


def test_timeout_before_head_and_mid_body() -> None:
    with LoopbackServer("hold") as srv:
        started = time.monotonic()
        held = run_batch(srv.url, 3, timeout_s=0.3)
        assert time.monotonic() - started < 2.0
    with LoopbackServer("stall_body") as srv:
        stalled = run_batch(srv.url, 3, timeout_s=0.3)
    for rec in held.records:
        assert rec.error == "timeout" and "before the response head" in rec.error_detail
        assert 0.29 <= rec.duration_s < 0.6 and rec.status is None
    for rec in stalled.records:
        assert rec.error == "timeout" and "mid-body" in rec.error_detail
        assert rec.status == 200 and rec.body == "0123456789" and rec.headers_mono is not None
        assert verdict.judge(rec).cls == "timeout"


def test_deadline_accounts_for_every_planned_request() -> None:
    with LoopbackServer("hold") as srv:
        started = time.monotonic()
        result = run_schedule_sync(
            srv.url,
            [Batch("now", 5), Batch("later", 3, at_s=30.0)],
            deadline_s=1.0,
        )
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5
    assert result.planned == 8 and len(result.records) == 8
    assert all(r.error == "timeout" and "deadline" in r.error_detail for r in result.records)
    now = [r for r in result.records if r.batch == "now"]
    later = [r for r in result.records if r.batch == "later"]
    assert all(r.sent_mono is not None for r in now)
    assert all(r.sent_mono is None and r.planned_at == 30.0 for r in later)
    summary = verdict.summarize(result.records, planned=result.planned)
    assert summary.missing == 0 and summary.classes == {"timeout": 8}


def test_events_run_off_loop_at_their_offsets() -> None:
    threads: list[str] = []

    def block() -> str:
        threads.append(threading.current_thread().name)
        time.sleep(0.6)  # would stall the loop and the batch at 0.4 s if run on it
        return "stopped"

    def boom() -> None:
        raise RuntimeError("docker said no")

    with LoopbackServer("ok") as srv:
        result = run_schedule_sync(
            srv.url + "?sleep=100",
            [Batch("first", 10), Batch("during", 10, at_s=0.4)],
            [Event("stop", 0.2, block), Event("fail", 0.3, boom)],
        )
    stop, fail = result.events
    assert threads and threads[0] != threading.main_thread().name
    assert abs(stop.started_mono - result.started_mono - 0.2) < 0.05
    assert stop.finished_mono - stop.started_mono >= 0.6 and stop.error is None
    assert stop.result == "'stopped'"
    # the second event started while the first still blocked: its own thread
    assert abs(fail.started_mono - result.started_mono - 0.3) < 0.05
    assert fail.error == "RuntimeError: docker said no"
    during = [r for r in result.records if r.batch == "during"]
    sent = [r.sent_mono - result.started_mono for r in during]
    assert all(0.4 <= s < 0.45 for s in sent), sent  # loop not stalled by the event
    assert all(r.status == 200 for r in result.records)


def test_start_skew_of_500_concurrent_requests() -> None:
    with LoopbackServer("ok") as srv:
        result = run_batch(srv.url + "?sleep=1000", 500)
    assert srv.requests == 500
    assert all(r.status == 200 for r in result.records)
    skew = result.start_skew_s()
    print(f"start skew of 500 concurrent requests: {skew * 1000:.1f} ms")
    assert skew is not None and skew <= 0.1
    assert verdict.summarize(result.records).start_skew_s == pytest.approx(skew)
    first = min(r.sent_mono for r in result.records) - result.started_mono
    assert 0 <= first < 0.05  # written at the planned instant, not before


def test_url_path_batch_path_and_host_override() -> None:
    with LoopbackServer("ok") as srv:
        run_schedule_sync(
            srv.url + "x?sleep=1",
            [Batch("url", 1), Batch("own", 1, path="/y?sleep=2")],
            headers={"Host": "hello.default.example.com", "X-Trace": "1"},
        )
    heads = sorted(srv.heads)
    assert heads[0].startswith(b"GET /x?sleep=1 HTTP/1.1\r\n")
    assert heads[1].startswith(b"GET /y?sleep=2 HTTP/1.1\r\n")
    for head in heads:
        assert b"\r\nhost: hello.default.example.com\r\n" in head.lower()
        assert head.lower().count(b"\r\nhost:") == 1 and b"x-trace: 1" in head.lower()


def test_body_is_capped() -> None:
    assert BODY_LIMIT < 600
    with LoopbackServer("ok", pod="p" * 600) as srv:
        result = run_batch(srv.url, 1)
    rec = result.records[0]
    assert len(rec.body) == BODY_LIMIT and rec.bytes_received == rec.content_length > BODY_LIMIT


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"url": "ftp://127.0.0.1/"}, "url: only http:// or https://"),
        ({"url": "not a url"}, "url: only http:// or https://"),
        ({"url": "http://127.0.0.1:99999/"}, "url: bad port"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"deadline_s": -1}, "deadline_s"),
        ({"connect_lead_s": -1}, "connect_lead_s"),
        ({"headers": {"Connection": "x"}}, "reuse_connections"),
        ({"batches": [Batch("a", 1), Batch("a", 1)]}, "unique"),
        ({"batches": [Batch("a", 30000)]}, "RLIMIT_NOFILE"),
    ],
)
def test_bad_input_is_named(kwargs: dict, needle: str) -> None:
    args = {"url": "http://127.0.0.1:9/", "batches": [Batch("a", 1)]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        run_schedule_sync(args.pop("url"), args.pop("batches"), **args)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"requests": -1}, "requests"),
        ({"requests": 1.5}, "requests"),
        ({"concurrency": 0}, "concurrency"),
        ({"at_s": -2}, "at_s"),
        ({"path": "no-slash"}, "path"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_batch_is_named(kwargs: dict, needle: str) -> None:
    args = {"name": "a", "requests": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        Batch(**args)


@pytest.mark.parametrize(
    ("behaviour", "body", "length"),
    [
        ("chunked", "hello world", None),  # 103 first, every line split across reads
        ("unframed", "hello", None),  # close-delimited: EOF ends a complete body
        ("http10", "hello", 5),
    ],
)
def test_every_body_framing_completes(behaviour: str, body: str, length: int | None) -> None:
    with LoopbackServer(behaviour) as srv:
        result = run_batch(srv.url, 3, expect_body=body, timeout_s=5)
    assert srv.requests == 3
    for rec in result.records:
        _ordered(rec)
        assert (rec.error, rec.status, rec.body, rec.body_ok) == (None, 200, body, True)
        assert rec.bytes_received == len(body) and rec.content_length == length
        assert rec.headers_mono is not None and verdict.judge(rec).cls == "ok"


def test_http10_response_is_not_reused() -> None:
    with LoopbackServer("http10") as srv:
        result = run_schedule_sync(
            srv.url, [Batch("b", 3, concurrency=1)], reuse_connections=True, timeout_s=5
        )
    assert all(r.error is None and r.body == "hello" for r in result.records)
    assert (srv.connections, srv.requests) == (3, 3)


@pytest.mark.parametrize(
    ("behaviour", "error", "status", "detail"),
    [
        ("chunked_truncate", "truncated", 200, "incomplete chunked read"),
        ("bad_length", "protocol_error", None, "bad Content-Length"),
    ],
)
def test_framing_faults(behaviour: str, error: str, status: int | None, detail: str) -> None:
    with LoopbackServer(behaviour) as srv:
        result = run_batch(srv.url, 3, timeout_s=5)
    assert srv.requests == 3
    for rec in result.records:
        _ordered(rec)
        assert rec.error == error and detail in rec.error_detail
        assert verdict.judge(rec).cls == error
    if error == "truncated":
        assert all(r.status == status and r.body == "hello" for r in result.records)


def test_connection_closed_before_the_instant_is_an_empty_reply() -> None:
    """The FIN arrives during the connect lead; the request still goes out at its instant."""
    with LoopbackServer("early_close") as srv:
        result = run_batch(srv.url, 4, timeout_s=5)
    assert srv.connections == 4 and srv.requests == 0
    for rec in result.records:
        _ordered(rec)
        assert rec.error == "empty_reply" and "before any response byte" in rec.error_detail
        assert rec.sent_mono is not None and rec.sent_mono - result.started_mono >= 0
