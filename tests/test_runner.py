"""Scenario judging: deletion behaviour and expectations (negative controls must be caught)."""

import pytest
from misbehaving_servers import LoopbackServer

from pytest_knative_drain.load.records import RequestRecord
from pytest_knative_drain.matrix.apps import APPS
from pytest_knative_drain.matrix.cases import cases, families
from pytest_knative_drain.matrix.configs import CONFIGS
from pytest_knative_drain.matrix.scenarios import SCENARIOS, TRIGGERS, BatchSpec, ScenarioPlan
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.run import verdict
from pytest_knative_drain.run.runner import (
    ScenarioResult,
    TriggerError,
    expectation_problem,
    judge_result,
    run_scenario,
)


def scenario_result(
    records, *, scenario="pod-delete-long", app="x", events=(), t0=0.0, gone=31.0,
    killed=(), expected=(), ended=(),
) -> ScenarioResult:  # fmt: skip
    """An unjudged result of ``scenario`` (its quick plan and its trigger) from ``records``."""
    spec = SCENARIOS[scenario]
    return ScenarioResult(
        scenario=scenario,
        app=app,
        profile="quick",
        plan=spec.plan("quick"),
        records=records,
        summary=verdict.summarize(records, planned=len(records)),
        events=list(events),
        t0_mono=t0,
        gone_after_s=gone,
        killed=list(killed),
        expected=frozenset(expected),
        trigger=spec.trigger,
        ended_pods=list(ended),
    )


def result(records, **kw):
    """A judged result of ``scenario`` from ``records``."""
    r = scenario_result(records, **kw)
    judge_result(r)
    return r


def ok(i):
    return RequestRecord(id=i, batch="batch-1", url="u", status=200, body="slept", body_ok=True)


def eof(i):
    return RequestRecord(id=i, batch="batch-1", url="u", status=502, body="EOF")


def test_clean_run_passes_a_must_pass_app():
    r = result([ok(i) for i in range(5)])
    assert r.passed and r.catches == set() and expectation_problem(r) is None


def test_sigkill_is_a_problem_even_when_every_request_succeeded():
    r = result([ok(i) for i in range(5)], killed=["user-container"], gone=120.0)
    assert not r.passed and "sigkill" in r.catches
    assert "shell-form" in r.problems[0]


def test_good_app_failing_is_reported_with_the_reason():
    r = result([ok(0), eof(1)])
    problem = expectation_problem(r)
    assert problem and "must drain cleanly" in problem and "strict SLI" in problem


def test_negative_control_that_passes_fails_the_gate():
    r = result([ok(i) for i in range(5)], expected={"queue-proxy"})
    problem = expectation_problem(r)
    assert problem and "NOT caught" in problem


def test_negative_control_caught_by_the_wrong_component_still_fails():
    r = result([ok(i) for i in range(5)], killed=["user-container"], expected={"queue-proxy"})
    assert "NOT caught" in (expectation_problem(r) or "")


def test_negative_control_caught_as_expected():
    r = result([ok(0), eof(1)], expected={"queue-proxy"})
    assert expectation_problem(r) is None and r.expectation_met


def test_timeliness_bound():
    r = result([ok(0)], scenario="deletion-timeliness", gone=95.0)
    assert "slow-deletion" in r.catches


def test_every_scenario_has_a_twin_that_must_be_caught():
    """A gate that cannot fail is worthless: each scenario has a negative control.

    The twin is a broken app, or a drain-clean app under a broken Knative config; and
    every scenario also has a case that must pass.
    """
    matrix = [c for family in families() for c in cases(family, list(APPS))]
    for name in SCENARIOS:
        mine = [c for c in matrix if c.scenario.name == name]
        assert any(c.expected for c in mine), f"{name}: no case that must be caught"
        assert any(not c.expected for c in mine), f"{name}: no case that must pass"
        for c in mine:  # a twin config runs with drain-clean apps only
            if c.config.expect:
                assert APPS[c.app].must_pass_everywhere, c.id
    assert any(app.must_pass_everywhere for app in APPS.values())


def test_config_timeout_and_platforms():
    plan = SCENARIOS["pod-delete-long"].plan("quick")
    assert CONFIGS["default"].timeout_seconds(plan) == plan.timeout_seconds == 120
    assert CONFIGS["short-timeout"].timeout_seconds(plan) == 45  # 60 % of 75 s requests
    assert (
        CONFIGS["short-timeout"].timeout_seconds(SCENARIOS["pod-delete-long"].plan("seed")) == 180
    )
    local = {c.id for f in families() for c in cases(f, ["go-exit"]) if "local" in c.platforms}
    assert "pod-delete-long-go-exit" in local
    assert not any(
        k.startswith(("rollout", "scale-down", "node-drain", "activator")) for k in local
    )


class _TargetWhoseTriggerFails:
    """The runner's side of a pod target, in front of a real loopback server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list = []

    def trigger(self, trigger):
        raise ClusterError("scale-down: no PodAutoscaler labelled serving.knative.dev/service=x")

    def wait_gone(self, timeout_s=None):  # pragma: no cover - must not be reached
        raise AssertionError("wait_gone after a failed trigger")


def test_a_trigger_that_fails_ends_the_run_without_a_verdict():
    plan = ScenarioPlan((BatchSpec("batch-1", 3, 0.0, 0.1),), trigger_at_s=0.05, timeout_seconds=1)
    with LoopbackServer("ok") as server:
        target = _TargetWhoseTriggerFails(server.url)
        with pytest.raises(
            TriggerError, match=r"trigger scale-down at 0.05 s failed.*PodAutoscaler"
        ):
            run_scenario(
                target,
                scenario="scale-down-long",
                app="x",
                profile="quick",
                plan=plan,
                trigger=TRIGGERS["scale-down"],
            )
        assert server.requests == 3  # the load ran; the requests were not judged


def test_a_kill_by_design_is_not_blamed_on_the_app():
    records = [ok(i) for i in range(9)] + [eof(9)]
    r = result(records, scenario="pod-kill", gone=0.5, killed=["user-container", "queue-proxy"])
    assert r.passed and "sigkill" not in r.catches  # 0.9 meets the 0.90 tolerance
    assert r.summary.strict_sli == 0.9


def _burst(records, ended):
    return result(
        records, scenario="scale-down-after-burst", app="go-exit", gone=40.0,
        expected={"queue-proxy"}, ended=ended,
    )  # fmt: skip


def _long(i, pod):
    return RequestRecord(
        id=i, batch="long", url="u", status=200, body="slept", body_ok=True, pod=pod
    )


def test_a_run_where_no_long_request_met_an_ended_pod_proves_nothing():
    r = _burst([_long(0, "pod-a"), _long(1, "pod-a"), ok(2)], ended=["pod-b", "pod-c"])
    assert not r.passed
    assert "inconclusive: none of the 2 'long' requests was on a pod that ended" in r.problems[0]
    assert "answered by pod-a" in r.problems[0]
    # for a negative control it is no catch either: the gate says it could not fail here
    assert "was NOT caught" in expectation_problem(r)


def test_a_long_request_on_an_ended_pod_makes_the_run_count():
    r = _burst([_long(0, "pod-a"), _long(1, "pod-b")], ended=["pod-b"])
    assert r.passed
    dropped = RequestRecord(id=1, batch="long", url="u", status=502, body="EOF")
    r = _burst([_long(0, "pod-a"), dropped], ended=["pod-b"])
    assert r.catches == {"queue-proxy"} and not any("inconclusive" in p for p in r.problems)


class _Event:
    def __init__(self, name: str, mono: float, detail: str = "") -> None:
        self.name, self.mono, self.detail = name, mono, detail


def test_sigkill_hint_blames_the_app_only_when_its_container_was_killed() -> None:
    app_killed = result([ok(i) for i in range(3)], killed=["user-container"], gone=120.0)
    assert any("the app never exited on SIGTERM" in p for p in app_killed.problems)
    # kind, 1.14.2, streaming-long @response-start-timeout: the app exited 0 on its own,
    # queue-proxy held the streams until its SIGKILL at the end of the grace period
    held = result([ok(i) for i in range(3)], killed=["queue-proxy"], gone=120.0)
    held.events = [
        _Event("user-container exited", 73.2, "exit code 0 (Completed), finishedAt 00:17:53"),
        _Event("queue-proxy exited", 120.4, "exit code 137 (Error) after SIGKILL"),
    ]
    judge_result(held)
    [problem] = [p for p in held.problems if "SIGKILL" in p]
    assert "never exited" not in problem
    assert "the app exited on its own (exit code 0 (Completed)" in problem
    assert "seen 73.2 s after the trigger): queue-proxy held on" in problem
    assert "sigkill" in held.catches  # what was caught does not change, only what it says


def _from_evidence(path, scenario, config, app):
    """A ScenarioResult rebuilt from a committed report's case (records and pod timeline)."""
    import evidence_reports

    entry = evidence_reports.case(path, scenario, config, app)
    events = evidence_reports.events(entry)
    return scenario_result(
        evidence_reports.records(entry),
        scenario=scenario,
        app=app,
        events=events,
        t0=next(e.mono for e in events if e.name in ("delete", SCENARIOS[scenario].trigger)),
        gone=entry["gone_after_s"],
        killed=entry["killed"],
        ended=entry["ended_pods"],
    )


KIND_123 = "2026-12-04-kind-matrix/1.23.0/kind-run1/drain-report.json"


def test_a_rollout_that_ended_the_old_pod_after_every_request_is_no_verdict():
    """Kind, Knative 1.23, 4 cases at once: the new revision's pods were Pending 50 s for
    CPU, the old pod was deleted 53 s in, its app signalled no sooner than 83 s, every 75 s
    request had ended by 70 s. go-exit went "uncaught": that run tested nothing."""
    from pytest_knative_drain.run.runner import untested_drain

    late = _from_evidence(KIND_123, "rollout-long", "default", "go-exit")
    problem = untested_drain(late)
    assert problem is not None and problem.startswith("inconclusive: no request was in flight")
    assert "app SIGTERM no sooner than +83.3 s after the trigger" in problem
    # the go-shutdown twin of the same run: deleted 31 s in, requests in flight past 61 s
    in_time = _from_evidence(KIND_123, "rollout-long", "default", "go-shutdown")
    assert untested_drain(in_time) is None


def test_a_local_run_across_the_apps_sigterm_is_judged_as_before():
    from pytest_knative_drain.run.runner import untested_drain

    path = "2026-12-01-local-replay/local-1.10.0/drain-report.json"
    for app in ("go-shutdown", "python-gunicorn-exec"):
        assert untested_drain(_from_evidence(path, "pod-delete-long", "default", app)) is None


def test_activator_and_node_drain_runs_are_judged_as_before():
    """An activator trigger ends an activator, never the app's pod: nothing to read there.
    A node drain evicts the revision pod while its requests are in flight (kind, 1.14.2)."""
    from pytest_knative_drain.run.runner import untested_drain

    path = "2026-12-01-kind-1.14-concurrent/kind/drain-report.json"
    for scenario in ("activator-delete-long", "node-drain-long"):
        case = _from_evidence(path, scenario, "default", "go-shutdown")
        assert case.ended_pods and untested_drain(case) is None, scenario


def test_short_plans_and_runs_that_cut_something_are_left_alone():
    from pytest_knative_drain.run.runner import untested_drain

    late = _from_evidence(KIND_123, "rollout-long", "default", "go-exit")
    late.records[0] = eof(0)  # one request cut: the run did test something
    assert untested_drain(late) is None
    short = result([ok(i) for i in range(3)], scenario="pod-delete-short", ended=("p",))
    assert untested_drain(short) is None  # its requests end within the quiet period by design
