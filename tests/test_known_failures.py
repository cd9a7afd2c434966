"""Known Knative failures: the records, how they mark cases, and the replay of one for real.

The replay runs the conformance suite on the local platform with the REAL queue-proxy of
Knative 1.7.0 (affected by knative/serving#13720) and of 1.10.0 (fixed by #13815): the
drain-clean app go-shutdown must be cut by queue-proxy on 1.7.0, named so by the diagnosis,
and pass on 1.10.0. About 4 minutes, plus about a minute per queue-proxy build when cold.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conformance_cmd import conformance_cmd

from pytest_knative_drain.knative import known_failures
from pytest_knative_drain.knative.known_failures import KNOWN_FAILURES, known_failure

ROOT = Path(__file__).resolve().parent.parent
QP_BUG = "queue-proxy-exits-before-in-flight"


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("1.0.2", False),  # still called mainServer.Shutdown after the quiet period
        ("1.1.0", True),  # #12033 moved draining to knative/pkg's Drainer
        ("1.7.0", True),
        ("1.8.5", True),
        ("1.8.6", False),  # backport of #13815
        ("1.9.0", True),
        ("1.9.2", True),
        ("1.9.3", False),  # backport of #13815 (#13829)
        ("1.10.0", False),
        ("1.14.2", False),
    ],
)
def test_queue_proxy_bug_range_as_read_in_the_tags(version: str, affected: bool) -> None:
    record = known_failures.by_id(QP_BUG)
    assert record.affects(version) is affected
    found = known_failure("pod-delete-long", "default", version)
    assert (found is record) is affected


def test_only_must_pass_cells_of_the_record_match() -> None:
    assert known_failure("pod-delete-short", "default", "1.7.0") is None  # ends inside 30 s
    assert known_failure("pod-delete-long", "short-timeout", "1.7.0") is None  # its own twin
    assert known_failure("second-batch-during-termination", "default", "1.7.0") is not None


WS_BUG = "queue-proxy-cuts-websockets-at-drain"
GRPC_BUG = "queue-proxy-cuts-grpc-at-drain"
QUEUED_BUG = "queued-requests-sent-after-app-sigterm"
RST_BUG = "response-start-timeout-hangs-stream"
TLS_BUG = "internal-tls-prestop-gets-400"
TLS_EXIT_BUG = "internal-tls-prestop-gets-400-exit-at-once"


def test_records_are_complete() -> None:
    ids = [r.id for r in KNOWN_FAILURES]
    assert len(ids) == len(set(ids))
    for record in KNOWN_FAILURES:
        assert record.issues and record.fix and record.evidence
        # a bug no release has fixed yet is a finding: its fix is "none yet", said so
        assert record.fixed_in or (record.fix == "none yet" and "no fix yet" in record.reason)
        assert all(not record.affects(v) for v in record.fixed_in)
        assert record.signature in ("queue-proxy", "activator", "ingress")
        assert record.id in record.reason and (record.fix in record.reason or not record.fixed_in)
    with pytest.raises(KeyError, match="known:"):
        known_failures.by_id("nope")


def _collect(pytester: pytest.Pytester, version: str) -> dict[str, pytest.Item]:
    items, _ = pytester.inline_genitems(
        str(ROOT / "conformance" / "test_pod_delete.py"),
        "--platform=local",
        f"--knative-version={version}",
        "-p",
        "no:cacheprovider",
    )
    return {item.name: item for item in items}


def test_affected_release_marks_must_pass_cases_xfail_strict(pytester: pytest.Pytester) -> None:
    items = _collect(pytester, "1.7.0")
    marked = {
        name for name, item in items.items() if item.get_closest_marker("drain_known_failure")
    }
    assert "test_pod_delete[pod-delete-long-go-shutdown]" in marked
    assert "test_pod_delete[second-batch-during-termination-python-gunicorn-exec]" in marked
    # negative controls and short scenarios are judged as everywhere else
    assert "test_pod_delete[pod-delete-long-go-exit]" not in marked
    assert "test_pod_delete[pod-delete-long-short-timeout-go-shutdown]" not in marked
    assert not any("pod-delete-short" in name and "internal-tls" not in name for name in marked)
    xfail = items["test_pod_delete[pod-delete-long-go-shutdown]"].get_closest_marker("xfail")
    assert xfail is not None and xfail.kwargs["strict"] is True
    assert "knative/serving#13720" in xfail.kwargs["reason"]


def test_only_a_missed_expectation_is_the_expected_failure(pytester: pytest.Pytester) -> None:
    """A known failure's xfail accepts the verdict's failure only: an error in the suite or
    the platform under a known-failure case stays an error (a preflight KeyError read as
    three expected failures on kind 1.19.6, 2026-12-07)."""
    pytester.makepyfile(
        """
        import pytest
        from pytest_knative_drain.plugin import ExpectationNotMet

        pytestmark = pytest.mark.drain_family("pod_delete")

        def test_missed(drain_case):
            raise ExpectationNotMet("0/20 sessions closed 1000", pytrace=False)

        def test_broken(drain_case):
            raise KeyError("grpc-stream")
        """
    )
    result = pytester.runpytest(
        "--platform=local",
        "--knative-version=1.14.2",
        "-p",
        "no:cacheprovider",
        "-k",
        "websocket_long and go_shutdown and not activator",
    )
    result.assert_outcomes(xfailed=1, failed=1)
    result.stdout.fnmatch_lines(["*KeyError: *grpc-stream*", "FAILED *test_broken*"])


def test_a_record_of_one_profile_marks_only_that_profile(pytester: pytest.Pytester) -> None:
    """queue-proxy waits at most 60 s after its drain for h2c calls from 1.22: the seed
    profile's 300 s calls are cut, the quick profile's 75 s calls are not."""
    seed, _ = pytester.inline_genitems(
        str(ROOT / "conformance" / "test_pod_delete.py"),
        "--platform=local",
        "--knative-version=1.23.0",
        "--profile=seed",
        "-p",
        "no:cacheprovider",
    )
    marked = {
        i.name: i.get_closest_marker("drain_known_failure").args[0]
        for i in seed
        if i.get_closest_marker("drain_known_failure")
    }
    cap = "queue-proxy-cuts-h2c-60s-after-drain"
    assert {name: record for name, record in marked.items() if "queued" not in name} == {
        f"test_pod_delete[{s}-{a}]": cap
        for s in ("grpc-unary-long", "grpc-stream-long")
        for a in ("python-gunicorn-exec", "go-shutdown")
    }
    item = next(i for i in seed if i.name == "test_pod_delete[grpc-unary-long-go-shutdown]")
    reason = item.get_closest_marker("xfail").kwargs["reason"]
    assert reason.endswith("(none yet: evidence/2026-12-07-local-grpc/README.md; no fix yet)")
    quick = _collect(pytester, "1.23.0").values()
    assert not any(_marked(i) == cap for i in quick)


def _marked(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("drain_known_failure")
    return marker.args[0] if marker else None


def test_fixed_release_marks_nothing(pytester: pytest.Pytester) -> None:
    """1.23.0 has the fix of every recorded bug that has one: only findings no release has
    fixed yet still mark cases there."""
    items = _collect(pytester, "1.23.0")
    unfixed = {r.id for r in KNOWN_FAILURES if not r.fixed_in}
    marked = {_marked(i) for i in items.values()} - {None}
    assert items and marked == {"queued-requests-sent-after-app-sigterm"} <= unfixed


def test_each_record_marks_only_its_own_cases(pytester: pytest.Pytester) -> None:
    items = _collect(pytester, "1.14.2")  # queue-proxy's drain bug fixed, the others not
    marked = {
        name: item.get_closest_marker("drain_known_failure").args[0]
        for name, item in items.items()
        if item.get_closest_marker("drain_known_failure")
    }
    assert marked == {
        "test_pod_delete[websocket-long-python-gunicorn-exec]": WS_BUG,
        "test_pod_delete[websocket-long-go-shutdown]": WS_BUG,
        # closes its websockets at once: it must pass websocket-long where Knative allows
        "test_pod_delete[websocket-long-python-gunicorn-default-timeout]": WS_BUG,
        "test_pod_delete[streaming-long-response-start-timeout-python-gunicorn-exec]": RST_BUG,
        "test_pod_delete[streaming-long-response-start-timeout-go-shutdown]": RST_BUG,
        # the admin port is TLS-only with internal TLS: the plain-HTTP preStop gets 400
        "test_pod_delete[second-batch-during-termination-internal-tls-python-gunicorn-exec]": (
            TLS_BUG
        ),
        "test_pod_delete[second-batch-during-termination-internal-tls-go-shutdown]": TLS_BUG,
        # exits at once on SIGTERM, which now comes at the delete: its short requests are cut
        "test_pod_delete[pod-delete-short-internal-tls-go-exit]": TLS_EXIT_BUG,
        "test_pod_delete[deletion-timeliness-internal-tls-go-exit]": TLS_EXIT_BUG,
        # h2c connections are hijacked like websockets: cut at the end of the drain
        "test_pod_delete[grpc-unary-long-go-shutdown]": GRPC_BUG,
        "test_pod_delete[grpc-unary-long-python-gunicorn-exec]": GRPC_BUG,
        "test_pod_delete[grpc-stream-long-go-shutdown]": GRPC_BUG,
        "test_pod_delete[grpc-stream-long-python-gunicorn-exec]": GRPC_BUG,
        # queue-proxy sends queued requests to an app it has already let go (a finding)
        "test_pod_delete[queued-during-termination-go-shutdown]": QUEUED_BUG,
        "test_pod_delete[queued-during-termination-python-gunicorn-exec]": QUEUED_BUG,
    }


def test_cluster_platforms_refuse_local_only_releases(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--platform=kind", "--knative-version=1.7.0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--knative-version=1.7.0: Knative 1.7.0 runs on --platform=local only*1.10*"]
    )
    assert "Traceback" not in result.stderr.str()


def _conformance(out: Path, version: str, select: str, *extra: str) -> tuple[int, str, dict]:
    report = out / f"drain-report-{version}.json"
    proc = subprocess.run(
        conformance_cmd(version, select, f"--drain-report={report}", "-rA", *extra),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (out / f"pytest-{version}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr, json.loads(report.read_text())


def _case(report: dict, scenario: str, app: str) -> dict:
    return next(
        s
        for s in report["scenarios"]
        if s["scenario"] == scenario and s["app"] == app and s["config"]["name"] == "default"
    )


@pytest.mark.slow
def test_replay_knative_1_7_0_cut_by_queue_proxy_and_1_10_0_fixed(tmp_path: Path) -> None:
    # 1.7.0, the issue's own command: a known Knative failure (xfail) with and without internal
    # TLS, the short-timeout twin still caught
    rc, log, report = _conformance(tmp_path, "1.7.0", "pod_delete_long and go_shutdown")
    assert rc == 0, log[-6000:]
    for case_id in ("pod-delete-long-go-shutdown", "pod-delete-long-internal-tls-go-shutdown"):
        assert re.search(rf"^XFAIL \S+::test_pod_delete\[{case_id}\] - known", log, re.M)
    assert re.search(r"\b1 passed\b.*\b2 xfailed\b", log), log[-3000:]
    case = _case(report, "pod-delete-long", "go-shutdown")
    assert case["verdict"] == "fail" and case["outcome"] == "known"
    assert case["known_failure"]["id"] == QP_BUG
    assert report["verdict"] == "known-knative-failures"
    # every long request cut with no answer, and the diagnosis names queue-proxy, not the app
    records = case["records"]
    assert records and all(r["class"] in ("empty_reply", "reset") for r in records)
    assert {r["signature"] for r in records} == {"queue-proxy"}
    assert all(r["hint"].startswith("queue-proxy ended before its in-flight") for r in records)
    assert {r["pod_event"]["event"] for r in records} == {"queue-proxy exited"}
    # the timeline says why: queue-proxy exited on its own while the app still ran (Docker
    # reports the two exits up to ~0.5 s late, in either order: the cuts are the clock)
    deleted = next(e["mono"] for e in case["events"] if e["name"] == "delete")
    app_exit = next(e["mono"] for e in case["events"] if e["name"] == "user-container exited")
    assert all(r["finished_mono"] <= app_exit for r in records)
    assert 28 <= max(r["finished_mono"] for r in records) - deleted <= 40
    assert case["killed"] == []
    assert all(28 <= r["pod_event"]["t_from_trigger_s"] <= 40 for r in records)

    # the same case without the record: the gate itself fails on 1.7.0
    rc, log, _ = _conformance(
        tmp_path, "1.7.0", "pod_delete_long and go_shutdown and not short_timeout", "--runxfail"
    )
    assert rc == pytest.ExitCode.TESTS_FAILED, log[-3000:]
    assert re.search(r"^FAILED \S+::test_pod_delete\[pod-delete-long-go-shutdown\]", log, re.M)

    # 1.10.0 (#13815): the same drain-clean app, every request answered
    rc, log, report = _conformance(
        tmp_path, "1.10.0", "pod_delete_long and go_shutdown and not short_timeout"
    )
    assert rc == 0, log[-6000:]
    case = _case(report, "pod-delete-long", "go-shutdown")
    assert case["outcome"] == "ok" and case["known_failure"] is None
    assert case["summary"]["ok"] == case["summary"]["planned"] == 50


def test_a_minor_as_upper_bound_covers_patches_tagged_later() -> None:
    record = known_failures.by_id("response-start-timeout-hangs-stream")
    assert record.affects("1.18.2") and record.affects("1.18.9")  # 1.18.9 does not exist yet
    assert not record.affects("1.19.0") and not record.affects("1.6.3")
    streams = known_failure("streaming-long", "default", "1.7.0")
    assert streams is not None and streams.id == QP_BUG
    assert known_failure("streaming-long", "default", "1.10.0") is None
