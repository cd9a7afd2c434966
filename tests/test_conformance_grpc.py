"""gRPC over h2c end to end on the local platform: the fixture apps' gRPC form behind
Knative 1.14's real queue-proxy, through pytest, then the drain report read.

On 1.14 queue-proxy cuts every gRPC call at the end of its drain (the recorded Knative
failure ``queue-proxy-cuts-grpc-at-drain``, fixed in 1.22.0): grpc-unary-long with the
drain-clean app is xfail(strict=True), every call cut with no answer and put down to
queue-proxy's exit with the app still serving. grpc-stream-long with go-exit (grpc-go's
``Stop()`` at SIGTERM) is a negative control and is caught. 1.22.0 and 1.23.0, where the
drain-clean apps keep every call, ran by hand (evidence/2026-12-07-local-grpc/). About 90 s.
"""

from __future__ import annotations

import re

import pytest
from conformance_cmd import run_pod_delete_cases

from pytest_knative_drain.run import verdict

pytestmark = pytest.mark.slow
CASES = ("grpc-unary-long-go-shutdown", "grpc-stream-long-go-exit")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return run_pod_delete_cases(tmp_path_factory.mktemp("grpc"), "1.14", CASES, timeout_s=900)


def _case(report: dict, scenario: str, app: str) -> dict:
    [found] = [s for s in report["scenarios"] if (s["scenario"], s["app"]) == (scenario, app)]
    return found


def test_the_known_failure_and_the_caught_twin(run: tuple[str, dict]) -> None:
    stdout, report = run
    assert re.search(r"\b1 passed, .*\b1 xfailed\b", stdout), stdout[-3000:]
    unary = _case(report, "grpc-unary-long", "go-shutdown")
    assert unary["summary"]["planned"] == 50 and unary["summary"]["ok"] == 0
    assert {r["kind"] for r in unary["records"]} == {"grpc"}
    # grpc-go sends its headers with the answer: a unary call cut before it had none
    assert {(r["class"], r["signature"]) for r in unary["records"]} == {
        ("empty_reply", "queue-proxy")
    }
    assert {r["hint"] for r in unary["records"]} == {verdict.HINTS["qp_exited_h2c"]}
    stream = _case(report, "grpc-stream-long", "go-exit")
    assert stream["expectation_met"] and stream["verdict"] == "fail", stream["problems"]
    assert all(r["messages_received"] >= 25 for r in stream["records"])  # cut at ~30 s
    assert {r["signature"] for r in stream["records"]} == {"queue-proxy"}
