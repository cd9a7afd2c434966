"""``run.restart``: a container restart read against Knative's promise, on the shapes the
load engine and the local pod write (the real run is tests/test_conformance_restart.py)."""

from __future__ import annotations

from pytest_knative_drain.load.records import RequestRecord
from pytest_knative_drain.platforms.pod import PodEvent
from pytest_knative_drain.run.restart import READY_AGAIN_BOUND_S, read_restart

T0 = 500.0
REFUSED = "dial tcp 127.0.0.1:8080: connect: connection refused\n"


def ev(name: str, at: float, detail: str = "") -> PodEvent:
    return PodEvent("pod", name, T0 + at, 0.0, detail)


def rec(i: int, sent: float, **kw: object) -> RequestRecord:
    base = dict(
        id=i, batch="b", url="http://x/", sent_mono=T0 + sent, finished_mono=T0 + sent + 0.01
    )
    return RequestRecord(**{**base, **kw})  # type: ignore[arg-type]


def answered(i: int, sent: float, status: int, body: str) -> RequestRecord:
    return rec(i, sent, status=status, body=body, headers_mono=T0 + sent + 0.005)


TIMELINE = [
    ev("started user-container", -6.0),
    ev("ready", -5.0),
    ev("liveness restart", 0.0),
    ev("SIGTERM user-container", 1.0),
    ev("user-container exited", 35.0),
    ev("started user-container", 35.5),
    ev("ready again", 35.6),
]


def test_only_queue_proxys_refusal_while_down_is_counted_apart() -> None:
    records = [
        answered(1, 10.0, 502, REFUSED),  # while down: Knative's answer there
        answered(2, -1.0, 502, REFUSED),  # before the restart: promised
        answered(3, 40.0, 502, REFUSED),  # after Ready again: promised
        answered(4, 10.0, 502, "EOF\n"),  # a cut while down is no refusal
        rec(5, 10.0, error="timeout"),  # nor is a hang
    ]
    reading = read_restart(records, TIMELINE)
    assert [r.id for r in reading.refused_while_down] == [1]
    assert [r.id for r in reading.promised] == [2, 3, 4, 5]
    assert reading.problems == []
    assert reading.to_dict()["ready_again_after_s"] == 35.6


def test_a_pod_not_ready_again_in_time_is_a_problem() -> None:
    late = [*TIMELINE[:-1], ev("ready again", 35.5 + READY_AGAIN_BOUND_S + 1)]
    assert "must be within" in read_restart([], late).problems[0]
    never = [*TIMELINE[:-1], ev("not ready again", 95.5, "no 200 to kubelet's probe")]
    reading = read_restart([answered(1, 50.0, 502, REFUSED)], never)
    assert reading.problems == [
        "the pod was not Ready again after the restart: no 200 to kubelet's probe"
    ]
    # with no Ready again the window never closes: its refusals stay Knative's answer
    assert len(reading.refused_while_down) == 1
    assert "NOT Ready again" in reading.line()


def test_no_restart_on_the_timeline_tested_nothing() -> None:
    reading = read_restart([answered(1, 10.0, 502, REFUSED)], TIMELINE[:2])
    assert reading.refused_while_down == [] and len(reading.problems) == 1
