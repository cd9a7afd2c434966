"""A user container restarted as kubelet does after a failed liveness probe, end to end on
the local platform with Knative 1.14's real queue-proxy (issue 20, item 3).

queue-proxy gets no SIGTERM: its drain handler ends the preStop's drain after 1 s, the app
gets SIGTERM then, and queue-proxy answers 502 "connection refused" while no app listens.
The drain-clean apps keep every request they accepted and the pod is Ready again within
the bound; the app that exits at once, gunicorn's default 30 s graceful timeout and the
shell-form CMD are caught. About 90 s (the cases run at once).
"""

from __future__ import annotations

import pytest
from conformance_cmd import run_family_cases

from pytest_knative_drain.run import verdict
from pytest_knative_drain.run.restart import READY_AGAIN_BOUND_S

pytestmark = pytest.mark.slow
APPS = (
    "go-shutdown",
    "python-gunicorn-exec",
    "go-exit",
    "python-gunicorn-default-timeout",
    "python-gunicorn-shell",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cases = tuple(f"container-restart-{a}" for a in APPS)
    out = tmp_path_factory.mktemp("restart")
    return run_family_cases(out, "1.14", "container_restart", cases, timeout_s=900)[1]


def _case(report: dict, app: str) -> dict:
    found = [s for s in report["scenarios"] if s["app"] == app]
    assert len(found) == 1, [s["app"] for s in report["scenarios"]]
    return found[0]


def _at(case: dict, name: str) -> float:
    return next(e["t_from_delete_s"] for e in case["events"] if e["name"] == name)


def test_queue_proxy_ends_the_drain_after_a_second_without_its_own_sigterm(report: dict) -> None:
    for app in APPS:
        case = _case(report, app)
        names = [e["name"] for e in case["events"]]
        assert "SIGTERM queue-proxy" not in names and "queue-proxy exited" not in names
        assert 0.9 <= _at(case, "preStop returned") <= 3.0, case["events"]
        assert "ready again" in names, case["events"]


@pytest.mark.parametrize("app", ["go-shutdown", "python-gunicorn-exec"])
def test_a_draining_app_keeps_what_it_accepted(report: dict, app: str) -> None:
    case = _case(report, app)
    assert case["outcome"] == "ok" and case["verdict"] == "pass", case["problems"]
    assert case["summary"]["failures"] == 0 and case["killed"] == []
    inflight = [r for r in case["records"] if r["batch"] == "in-flight"]
    assert len(inflight) == 10 and all(r["class"] == "ok" for r in inflight)
    restart = case["restart"]
    # the app is down from its SIGTERM until its 40 s requests end: queue-proxy refuses
    # what comes meanwhile, and serves what comes once the pod is Ready again
    assert restart["refused_while_down"] >= 20
    assert restart["new_container_after_s"] > 30
    ready = restart["ready_again_after_s"]
    assert ready - restart["new_container_after_s"] <= READY_AGAIN_BOUND_S
    t0 = next(e["mono"] for e in case["events"] if e["name"] == "liveness restart")
    after = [r for r in case["records"] if r["sent_mono"] >= t0 + ready]
    assert len(after) >= 40 and all(r["class"] == "ok" for r in after)
    for r in restart["refused_records"]:
        assert (r["status"], r["signature"]) == (502, "queue-proxy")
        assert "connection refused" in r["body"]
        assert r["hint"] == verdict.HINTS["app_gone"]


@pytest.mark.parametrize("app", ["go-exit", "python-gunicorn-default-timeout"])
def test_an_app_that_drops_in_flight_work_is_caught(report: dict, app: str) -> None:
    case = _case(report, app)
    assert case["outcome"] == "ok" and case["verdict"] == "fail"
    assert case["catches"] == ["queue-proxy"]
    failed = [r for r in case["records"] if r["class"] != "ok"]
    assert failed and {r["batch"] for r in failed} == {"in-flight"}
    assert {(r["status"], r["signature"]) for r in failed} == {(502, "queue-proxy")}
    # a cut, not the refusal Knative gives while nothing listens: never counted apart
    assert not any("connection refused" in (r["body"] or "") for r in failed)


def test_a_shell_form_cmd_is_caught_by_the_sigkill(report: dict) -> None:
    case = _case(report, "python-gunicorn-shell")
    assert case["outcome"] == "ok" and "sigkill" in case["catches"]
    assert case["killed"] == ["user-container"]
    assert any(p.startswith("the restart took the full grace period") for p in case["problems"])
    # /bin/sh never passed SIGTERM on: the app served on until the kill
    assert case["restart"]["new_container_after_s"] >= case["timeout_seconds"]
