"""``verdict.diagnose``: a cut with no HTTP answer, read against the pod's timeline.

The records and events are the shapes the load engine and the local pod write; the real
thing (queue-proxy 1.7.0 exiting under a draining app) is tests/test_known_failures.py.
"""

from __future__ import annotations

import evidence_reports

from pytest_knative_drain.load.records import RequestRecord
from pytest_knative_drain.platforms.pod import PodEvent
from pytest_knative_drain.run import verdict

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


# -- a cluster's timeline: kubelet reports container ends in one pod status update ---------
CLUSTER_END = [
    ev("delete", 2.0),
    ev("not ready", 25.0, "pod condition Ready"),
    ev("queue-proxy exited", 32.7, "exit code 0 (Completed), finishedAt 00:16:33"),
    ev("user-container exited", 32.7 + 2e-6, "exit code 0 (Completed), finishedAt 00:16:33"),
]


def stream_cut_through_envoy(at: float) -> RequestRecord:
    """A 2xx stream cut mid-body, seen through Kourier (Envoy writes ``server: envoy``)."""
    return RequestRecord(
        id=1, batch="streams", url="http://x/stream", sent_mono=T0, finished_mono=T0 + at,
        status=200, body_ok=False, error="truncated", server="envoy",
    )  # fmt: skip


def test_a_stream_cut_through_envoy_is_read_against_the_timeline() -> None:
    """Envoy's Server header names nobody on a 2xx answer: the app's exit at the cut does
    (queue-proxy waits for streams, so the app cut it and queue-proxy passed it on)."""
    j = verdict.diagnose(stream_cut_through_envoy(32.3), CLUSTER_END)
    assert (j.cls, j.signature, j.hint) == (
        "truncated",
        "queue-proxy",
        verdict.HINTS["app_cut_stream"],
    )
    assert j.event.name == "user-container exited"
    alone = verdict.diagnose(stream_cut_through_envoy(90.0), CLUSTER_END)  # nothing near
    assert (alone.signature, alone.hint) == ("ingress", verdict.HINTS["truncated"])


def test_exits_in_one_status_update_do_not_say_who_cut() -> None:
    """A websocket cut with both ends reported together is not pinned on queue-proxy (nor on
    the app); an HTTP cut is not queue-proxy's 'exited first' either."""
    ws = RequestRecord(
        id=1, batch="ws", url="ws://x/ws", sent_mono=T0, finished_mono=T0 + 33.0,
        error="ws_abnormal_close", kind="websocket",
    )  # fmt: skip
    j = verdict.diagnose(ws, CLUSTER_END)
    assert (j.signature, j.hint) == ("unknown", verdict.HINTS["exits_together"])
    assert j.event.name == "user-container exited"
    assert verdict.diagnose(cut(32.5), CLUSTER_END).signature == "unknown"
    # the same cut on the local platform's timeline (exits 0.1 s apart) is queue-proxy's
    assert verdict.diagnose(cut(32.0), TIMELINE).signature == "queue-proxy"


def test_exact_exit_stamps_keep_their_order_however_close() -> None:
    """The local platform stamps exits with Docker's FinishedAt: an app that ended 2 ms
    after queue-proxy (its last websocket closed by queue-proxy's exit) ended second, and
    the cut is queue-proxy's. Only whole-second finishedAt stamps are 'reported together'."""
    ws = RequestRecord(
        id=1, batch="ws", url="ws://x/ws", sent_mono=T0, finished_mono=T0 + 32.201,
        error="ws_abnormal_close", kind="websocket",
    )  # fmt: skip
    local = [
        ev("delete", 2.0),
        ev("SIGTERM queue-proxy", 2.0),
        ev("queue-proxy exited", 32.2, "exit code 0"),
        ev("user-container exited", 32.202, "exit code 0"),
    ]
    j = verdict.diagnose(ws, local)
    assert (j.signature, j.hint) == ("queue-proxy", verdict.HINTS["qp_exited_ws"])
    assert j.event.name == "queue-proxy exited"
    # the same two exits, as kubelet reports them (one finishedAt second): not told apart
    cluster = [
        ev(e.name, e.mono - T0, f"{e.detail} (Completed), finishedAt 00:16:33")
        if e.name.endswith(" exited")
        else e
        for e in local
    ]
    assert verdict.diagnose(ws, cluster).hint == verdict.HINTS["exits_together"]


def _real_case(path: str, scenario: str, config: str, app: str):
    """Records and the pod timeline of one case of a committed real-cluster report, the
    exits stamped as the pod watch now stamps them (kubelet's finishedAt)."""
    from pytest_knative_drain.platforms.cluster.pod_watch import at_finished_time

    entry = evidence_reports.case(path, scenario, config, app)
    stamped = [at_finished_time(e) for e in evidence_reports.events(entry)]
    return evidence_reports.records(entry), sorted(stamped, key=lambda e: e.mono)


RERUN = "2026-12-01-kind-1.14-concurrent/kind-rerun-streams/drain-report.json"


def test_a_stream_queue_proxy_held_on_a_real_cluster_is_signed_queue_proxy() -> None:
    """kind, Knative 1.14.2, streaming-long @response-start-timeout, go-shutdown: the app
    ended every stream and exited 0 (finishedAt delete+73 s); queue-proxy never wrote the
    terminating chunk and was SIGKILLed at delete+120 s; the killed pod's connections
    vanished, so the client timed out at delete+252 s. The run signed it `unknown`."""
    records, events = _real_case(RERUN, "streaming-long", "response-start-timeout", "go-shutdown")
    t0 = next(e.mono for e in events if e.name == "delete")
    app = next(e for e in events if e.name == "user-container exited")
    qp = next(e for e in events if e.name == "queue-proxy exited")
    assert 72 <= app.mono - t0 <= 75 and 119 <= qp.mono - t0 <= 121  # finishedAt, not seen
    judged = [verdict.diagnose(r, events) for r in records]
    assert {(j.cls, j.signature, j.hint) for j in judged} == {
        ("timeout", "queue-proxy", verdict.HINTS["qp_held"])
    }
    assert verdict.summarize(records, events=events).signatures == {"queue-proxy": 20}


def test_exits_kubelet_reports_in_one_second_stay_unattributed_on_a_real_cluster() -> None:
    """websocket-long, go-shutdown, same cluster: queue-proxy and the app both ended at
    00:42:48 (finishedAt has whole seconds); which of the two cut the sessions cannot be
    read from this timeline, and the diagnosis says so rather than guess."""
    records, events = _real_case(RERUN, "websocket-long", "default", "go-shutdown")
    judged = {(j.signature, j.hint) for j in (verdict.diagnose(r, events) for r in records)}
    assert judged == {("unknown", verdict.HINTS["exits_together"])}


def test_one_cut_reads_the_same_in_two_runs_whatever_second_finished_at_fell_in() -> None:
    """kind, Knative 1.23.0, websocket-long, go-exit, run twice: the app's finishedAt second
    began 1.63 s (run 1) and 1.41 s (run 2) before the sessions were cut, queue-proxy's a
    second later. Run 1 signed the cuts `unknown`, run 2 `queue-proxy`: a window of 1.5 s
    from a stamp that is up to 1 s early. Both now read alike: the app exited first."""
    for run in ("kind-run1", "kind-run2"):
        path = f"2026-12-04-kind-matrix/1.23.0/{run}/drain-report.json"
        records, events = _real_case(path, "websocket-long", "default", "go-exit")
        judged = {(j.signature, j.hint) for j in (verdict.diagnose(r, events) for r in records)}
        assert judged == {("queue-proxy", verdict.HINTS["app_cut_ws"])}, run


def test_finished_time_never_moves_an_exit_later_and_ignores_other_events() -> None:
    from pytest_knative_drain.platforms.cluster.pod_watch import at_finished_time
    from pytest_knative_drain.platforms.pod import PodEvent

    wall = 1796172422.5  # 2026-12-02 00:47:02.5 UTC
    exited = PodEvent("p", "queue-proxy exited", 100.0, wall, "exit code 0, finishedAt 00:46:14")
    stamped = at_finished_time(exited)
    assert (round(stamped.mono, 1), round(stamped.wall, 1)) == (51.5, wall - 48.5)
    future = PodEvent("p", "queue-proxy exited", 100.0, wall, "exit code 0, finishedAt 00:47:30")
    assert at_finished_time(future) == future  # yesterday by the clock: keep what was seen
    other = PodEvent("p", "ready", 100.0, wall, "finishedAt 00:46:14")
    assert at_finished_time(other) == other


def test_a_long_connection_cut_as_its_activator_exits_is_the_activators() -> None:
    """kind, 1.23.0, activator-delete-websocket (2026-12-08): the sessions through the
    deleted activator ended without a close frame as it exited (its 45 s drain, then
    Shutdown, which leaves hijacked connections to die with the process); the ones through
    the other activator ended as planned. Signed `unknown` before the timeline named it;
    the same cut under the short-grace twin is an activator SIGKILLed at its grace's end."""
    import collections

    for config, hint in (("default", "activator_exited"), ("activator-short-grace", None)):
        entry = evidence_reports.case(
            "2026-12-08-kind-1.23/kind-activator-websocket/drain-report.json",
            "activator-delete-websocket",
            config,
            "go-shutdown",
        )
        events = sorted(evidence_reports.events(entry), key=lambda e: e.mono)
        judged = [verdict.diagnose(r, events) for r in evidence_reports.records(entry)]
        cut = [j for j in judged if j.cls != "ok"]
        assert len(cut) in (10, 11) and {j.signature for j in cut} == {"activator"}
        assert {j.event.name for j in cut} == {"activator exited"}
        if hint:
            assert {j.hint for j in cut} == {verdict.HINTS[hint]}
        assert collections.Counter(j.cls for j in judged)["ok"] >= 9
