"""``verdict.diagnose``: a cut with no HTTP answer, read against the pod's timeline.

The records and events are the shapes the load engine and the local pod write; the real
thing (queue-proxy 1.7.0 exiting under a draining app) is tests/test_known_failures.py.
"""

from __future__ import annotations

from pytest_knative_drain import verdict
from pytest_knative_drain.platforms.pod import PodEvent
from pytest_knative_drain.records import RequestRecord

T0 = 1000.0


def cut(at: float, error: str = "empty_reply") -> RequestRecord:
    return RequestRecord(
        id=1, batch="b", url="http://x/", sent_mono=T0, finished_mono=T0 + at, error=error
    )


def ev(name: str, at: float, detail: str = "") -> PodEvent:
    return PodEvent("pod", name, T0 + at, 0.0, detail)


TIMELINE = [
    ev("delete", 2.0),
    ev("SIGTERM queue-proxy", 2.0),
    ev("preStop returned", 32.0, "status 200"),
    ev("SIGTERM user-container", 32.0),
    ev("queue-proxy exited", 32.2, "exit code 0"),
    ev("user-container exited", 32.3, "exit code 0"),
]


def test_queue_proxy_exit_with_the_app_still_running_is_queue_proxys() -> None:
    for error in ("empty_reply", "reset"):
        j = verdict.diagnose(cut(32.0, error), TIMELINE)  # the client sees it before Docker
        assert (j.cls, j.signature) == (error, "queue-proxy")
        assert j.hint == verdict.HINTS["qp_exited"]
        assert j.event.name == "queue-proxy exited"
    data = verdict.record_verdict(cut(32.0), TIMELINE, t0_mono=T0 + 2.0)
    assert data["signature"] == "queue-proxy"
    assert data["pod_event"] == {
        "event": "queue-proxy exited",
        "detail": "exit code 0",
        "t_from_trigger_s": 30.2,
    }


def test_without_a_timeline_the_cut_names_nobody() -> None:
    assert verdict.diagnose(cut(32.0)) == verdict.judge(cut(32.0))
    assert verdict.diagnose(cut(32.0)).signature == "unknown"


def test_app_gone_first_or_sigkill_or_far_away_is_not_queue_proxys() -> None:
    app_first = [*TIMELINE[:4], ev("user-container exited", 31.0), ev("queue-proxy exited", 32.2)]
    assert verdict.diagnose(cut(32.0), app_first).signature == "unknown"
    killed = [*TIMELINE[:4], ev("queue-proxy exited", 122.0, "exit code 137 after SIGKILL")]
    assert verdict.diagnose(cut(122.0), killed).signature == "unknown"
    assert verdict.diagnose(cut(20.0), TIMELINE).signature == "unknown"  # 12 s before


def test_http_answers_keep_their_own_signature() -> None:
    record = cut(32.0)
    record.error, record.status, record.body = None, 502, "EOF"
    j = verdict.diagnose(record, TIMELINE)
    assert (j.cls, j.signature, j.hint) == ("http_5xx", "queue-proxy", verdict.HINTS["app_dropped"])


def test_summary_counts_the_diagnosed_signature() -> None:
    records = [cut(32.0), cut(32.1)]
    assert verdict.summarize(records).signatures == {"unknown": 2}
    assert verdict.summarize(records, events=TIMELINE).signatures == {"queue-proxy": 2}
    table = verdict.failure_table(records, events=TIMELINE)
    assert table[0]["count"] == 2 and table[0]["signature"] == "queue-proxy"
