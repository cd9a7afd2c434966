"""A failed request read against the pod's timeline: which component cut it.

A cut with no HTTP answer (an empty reply, a reset, a stream or websocket ended mid-way)
names no component by itself; the container exits around it do. ``diagnose`` is
``judge`` plus that reading, ``record_verdict`` the record with its meaning for JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..load.records import GRPC_ERRORS, RequestRecord
from ..platforms.pod import stamp_slack_s
from .judge import HINTS, Judgement, _is_envoy, judge

# How far a pod event may be from the end of the request it explains: the client sees a
# socket close before Docker reports the process gone, and that report lags by up to ~1 s
# on a loaded 2-core host.
_BEFORE_S = 1.5
_AFTER_S = 2.0
_CUT_WITHOUT_ANSWER = frozenset({"empty_reply", "reset"})
# Cuts of a long-lived connection: a stream cut mid-body, a websocket ended with no close
# frame. Read against the timeline like the cuts above, and put down to the app when its
# container had just ended (queue-proxy only passed the cut on).
_LONG_CUTS = frozenset({"truncated", "ws_abnormal_close", "ws_reset"})
# A gRPC call that ended without its answer: as a long cut, whatever the call's length
# (a unary call holds its stream open until the answer, like a stream).
_GRPC_CUTS = frozenset(GRPC_ERRORS) - {"grpc_deadline", "grpc_status"}
# Two container exits this close were seen in one observation (one pod status update on a
# cluster, both stamped at the same finishedAt second). The local platform stamps each exit
# with Docker's own FinishedAt (nanoseconds): there two exits 3 ms apart are in that order.
_SAME_REPORT_S = 0.005
_APP_CUT = {"websocket": "app_cut_ws", "grpc": "app_cut_grpc"}
_QP_EXITED = {"websocket": "qp_exited_ws", "grpc": "qp_exited_h2c"}


def attribute(record: RequestRecord, events: Sequence[Any], window_s: float = _BEFORE_S) -> Any:
    """The pod event right before a failed request ended (e.g. 'SIGTERM user-container')."""
    if record.finished_mono is None:
        return None
    before = [e for e in events if 0 <= record.finished_mono - e.mono <= window_s]
    return before[-1] if before else None


def diagnose(record: RequestRecord, events: Sequence[Any] = ()) -> Judgement:
    """``judge`` read against the pod's timeline.

    A cut with no HTTP answer (empty reply, reset) names no component by itself. When it
    came as queue-proxy exited on its own (not SIGKILLed at the end of the grace period)
    while the user container had not exited yet, queue-proxy cut it: the app was still
    there to answer.
    """
    j = judge(record)
    long_cut = (
        j.cls in _LONG_CUTS
        or j.cls in _GRPC_CUTS
        or (record.kind == "websocket" and j.cls == "reset")
    )
    if long_cut and j.signature == "ingress" and _envoy_guess(record):
        # a 2xx cut mid-body through Envoy: its Server header names nobody; read the timeline
        found = diagnose(replace(record, server=None), events)
        return found if found.signature != "unknown" else j
    if j.cls == "truncated" and j.signature == "unknown":
        # queue-proxy's Shutdown waits for a stream (not for a websocket): when the app
        # ended around the cut, the app cut it, whichever exit Docker reported first
        # (its reports lag by up to ~0.5 s).
        app_exit = _app_left_just_before(record, events)
        if app_exit is not None:
            return Judgement(j.cls, "queue-proxy", HINTS["app_cut_stream"], app_exit)
    if (j.cls in _CUT_WITHOUT_ANSWER or long_cut) and j.signature == "unknown":
        together = _exits_reported_together(record, events)
        if together is not None and record.kind == "websocket":
            return Judgement(j.cls, "unknown", HINTS["exits_together"], together)
        qp_exit = _queue_proxy_left_first(record, events)
        if qp_exit is not None:
            hint = HINTS[_QP_EXITED.get(record.kind, "qp_exited")]
            return Judgement(j.cls, "queue-proxy", hint, qp_exit)
    if j.cls == "timeout" and record.headers_mono is not None and j.signature == "unknown":
        # the answer began, then never ended: on a cluster a SIGKILLed pod's connections
        # vanish without a reset, so the client's timeout ends it, long after the kill
        held = _queue_proxy_killed_holding(record, events)
        if held is not None:
            return Judgement(j.cls, "queue-proxy", HINTS["qp_held"], held)
    if long_cut and j.signature == "unknown":
        activator = _activator_left(record, events)
        if activator is not None:  # killed at its grace's end, or exited on its own
            how = "activator" if "SIGKILL" in activator.detail else "activator_exited"
            return Judgement(j.cls, "activator", HINTS[how], activator)
        held = _queue_proxy_held_after_app(record, events)
        if held is not None:
            return Judgement(j.cls, "queue-proxy", HINTS["qp_held"], held)
        app_exit = _app_left_just_before(record, events)
        if app_exit is not None:
            hint = HINTS[_APP_CUT.get(record.kind, "app_cut_stream")]
            return Judgement(j.cls, "queue-proxy", hint, app_exit)
    return j


def _activator_left(record: RequestRecord, events: Sequence[Any]) -> Any:
    """An activator's exit around a cut no revision container explains (activator triggers:
    the pod that ends is an activator; its exit is stamped at finishedAt, whole seconds)."""
    end = record.finished_mono
    if end is None or any(
        e.name in ("queue-proxy exited", "user-container exited")
        and -_BEFORE_S <= e.mono - end <= _AFTER_S
        for e in events
    ):
        return None
    return _exit_around(record, events, "activator exited")


def _queue_proxy_held_after_app(record: RequestRecord, events: Sequence[Any]) -> Any:
    """queue-proxy SIGKILLed around the cut, the app having exited before: the response
    was held by queue-proxy, not by the app."""
    end = record.finished_mono
    if end is None:
        return None
    killed = [
        e
        for e in events
        if e.name == "queue-proxy exited"
        and -_BEFORE_S <= e.mono - end <= _AFTER_S
        and "SIGKILL" in getattr(e, "detail", "")
    ]
    app_gone = any(e.name == "user-container exited" and e.mono < end - _BEFORE_S for e in events)
    return killed[0] if killed and app_gone else None


def _queue_proxy_killed_holding(record: RequestRecord, events: Sequence[Any]) -> Any:
    """queue-proxy SIGKILLed while the answer was open, after the app had exited on its
    own: queue-proxy held what the app had ended. The SIGKILL's exit event, or None."""
    start, end = record.headers_mono, record.finished_mono
    if start is None or end is None:
        return None
    killed = [
        e
        for e in events
        if e.name == "queue-proxy exited"
        and start <= e.mono <= end
        and "SIGKILL" in getattr(e, "detail", "")
    ]
    if not killed:
        return None
    app_left = [
        e
        for e in events
        if e.name == "user-container exited"
        and start <= e.mono < killed[0].mono
        and "SIGKILL" not in getattr(e, "detail", "")
    ]
    return killed[0] if app_left else None


def _app_left_just_before(record: RequestRecord, events: Sequence[Any]) -> Any:
    """The user container's exit (on its own or SIGKILLed) right around the cut."""
    return _exit_around(record, events, "user-container exited")


def _exit_around(record: RequestRecord, events: Sequence[Any], name: str) -> Any:
    """The first ``name`` exit event around the end of ``record``, or None."""
    end = record.finished_mono
    if end is None:
        return None
    near = [
        e
        for e in events
        if e.name == name
        # a cluster exit's whole-second stamp may be up to 1 s early: one cut 1.63 s after
        # the app's finishedAt second began went unattributed while its rerun, 1.41 s
        # after, was put down to the app (kind, 1.23.0, websocket-long-go-exit, 2026-12-04)
        and e.mono + stamp_slack_s(e) >= end - _BEFORE_S
        and e.mono <= end + _AFTER_S
    ]
    return near[0] if near else None


def explaining_event(j: Judgement, record: RequestRecord, events: Sequence[Any] = ()) -> Any:
    """The pod event a failed request is put down to: the one ``diagnose`` read (``j``),
    else the last event just before the request ended."""
    return j.event or attribute(record, events)


def _queue_proxy_left_first(record: RequestRecord, events: Sequence[Any]) -> Any:
    """queue-proxy's own exit (not a SIGKILL) around the cut, with the app still running
    (an app exit reported in the same pod status as queue-proxy's does not count as later,
    and an app that exited before queue-proxy did was not left behind by it: the app's exit
    is stamped a little after the client already saw the cut it caused)."""
    end = record.finished_mono
    if end is None:
        return None
    qp_exit = [
        e
        for e in events
        if e.name == "queue-proxy exited"
        and -_BEFORE_S <= e.mono - end <= _AFTER_S
        and "SIGKILL" not in getattr(e, "detail", "")
    ]
    if not qp_exit:
        return None
    qp = qp_exit[0]
    app_gone = any(
        e.mono <= end or e.mono < qp.mono or _one_report(e, qp)
        for e in events
        if e.name == "user-container exited"
    )
    return None if app_gone else qp


def _exits_reported_together(record: RequestRecord, events: Sequence[Any]) -> Any:
    """queue-proxy's and the app's exits around the cut, seen in one pod status update (a
    cluster: kubelet reports container ends together, finishedAt to the second): which of
    the two cut the connection cannot be told. The app's exit event, or None."""
    end = record.finished_mono
    if end is None:
        return None
    near = [e for e in events if -_BEFORE_S <= e.mono - end <= _AFTER_S]
    qp = [e for e in near if e.name == "queue-proxy exited"]
    app = [e for e in near if e.name == "user-container exited"]
    for e in app:
        if any(_one_report(e, q) for q in qp):
            return e
    return None


def _one_report(a: Any, b: Any) -> bool:
    """Two exits whose order cannot be read: the same whole-second ``finishedAt`` in one pod
    status update. Exits with exact stamps (the local platform's) keep their order however
    close: an app that ends as soon as queue-proxy has closed its connections ended second."""
    exact = stamp_slack_s(a) == 0 or stamp_slack_s(b) == 0
    return not exact and abs(a.mono - b.mono) <= _SAME_REPORT_S


def _envoy_guess(record: RequestRecord) -> bool:
    """The signature rests only on ``server: envoy`` (a 2xx answer names no component)."""
    return record.status is not None and 200 <= record.status < 300 and _is_envoy(record.server)


def record_verdict(
    record: RequestRecord, events: Sequence[Any] = (), t0_mono: float | None = None
) -> dict[str, Any]:
    """One record with what it means, for JSON: raw facts plus class, signature, hint and
    the pod event that explains a failure (``pod_event``, seconds from the trigger)."""
    j = diagnose(record, events)
    data = record.to_dict()
    data.update({"class": j.cls, "signature": j.signature, "hint": j.hint, "pod_event": None})
    if j.cls != "ok":
        event = explaining_event(j, record, events)
        if event is not None:
            data["pod_event"] = {
                "event": event.name,
                "detail": getattr(event, "detail", ""),
                "t_from_trigger_s": None if t0_mono is None else round(event.mono - t0_mono, 3),
            }
    return data
