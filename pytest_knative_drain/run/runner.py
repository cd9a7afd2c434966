"""Run one termination scenario against one pod and judge it.

Platform-neutral: it needs a target with ``url``, ``trigger()``, ``wait_gone()``
and ``events``. The verdict is strict SLI plus deletion behaviour; the
expectation (must pass, or must be caught) is checked separately so that a
negative control that slips through fails loudly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import load
from ..load import grpc as grpc_load
from ..load import websocket as ws_load
from ..load.records import RequestRecord
from ..matrix.configs import DEFAULT_CONFIG
from ..matrix.scenarios import GRPC_KINDS, TRIGGERS, BatchSpec, ScenarioPlan, Trigger
from ..platforms.cluster.ingress import unreachable
from ..platforms.pod import InfrastructureError
from . import verdict
from .restart import RestartReading, read_restart

STREAM_END = "stream complete"  # the last line of a complete fixture-app /stream body


def outcome_of(known_failure: bool, expectation_met: bool) -> str:
    """A case's outcome from whether a known Knative failure is recorded for it and whether
    it met its expectation (ScenarioResult.outcome; the bundle verifier reads it back)."""
    if known_failure:
        return "FAIL" if expectation_met else "known"
    return "ok" if expectation_met else "FAIL"


class TriggerError(RuntimeError):
    """The trigger never took effect: the run measured nothing and has no verdict."""


class Terminable(Protocol):
    url: str
    events: list[Any]

    def trigger(self, trigger: Trigger) -> Any: ...

    def wait_gone(self, timeout_s: float | None = None) -> Any: ...


@dataclass
class ScenarioResult:
    """Everything one scenario run produced, ready for the report."""

    scenario: str
    app: str
    profile: str
    plan: ScenarioPlan
    records: list[RequestRecord]
    summary: verdict.Summary
    events: list[Any]
    t0_mono: float | None
    gone_after_s: float | None
    killed: list[str]
    problems: list[str] = field(default_factory=list)
    catches: set[str] = field(default_factory=set)
    expected: frozenset[str] = frozenset()  # empty: must pass; else catch kinds, one must show
    duration_s: float = 0.0
    logs: dict[str, str] = field(default_factory=dict)  # container logs, kept on failure
    config: str = DEFAULT_CONFIG  # the Knative configuration it ran under
    trigger: str = "pod-delete"
    timeout_seconds: int | None = None  # the revision's, when the config changed it
    ended_pods: list[str] = field(default_factory=list)  # the pods the trigger ended
    # a known Knative bug that makes a drain-clean app fail here (known_failures.to_dict())
    known_failure: dict[str, Any] | None = None
    # a container restart: its way back, and the requests Knative may refuse meanwhile
    # (not in ``records``: counted apart, listed in the report's "restart" block)
    restart: RestartReading | None = None

    @property
    def label(self) -> str:
        """``scenario`` or ``scenario @config`` for a non-default Knative configuration."""
        return self.scenario if self.config == DEFAULT_CONFIG else f"{self.scenario} @{self.config}"

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def expected_label(self) -> str:
        return "caught" if self.expected else "pass"

    @property
    def expectation_met(self) -> bool:
        return expectation_problem(self) is None

    @property
    def outcome(self) -> str:
        """``ok``; ``known`` (a recorded Knative bug made it fail, as recorded); ``FAIL``
        (unexpected, including a recorded Knative bug that did not show: the record is wrong)."""
        return outcome_of(self.known_failure is not None, self.expectation_met)

    def cut_after(self) -> dict[str, int]:
        """Failed requests per pod event that explains them (``verdict.explaining_event``)."""
        counts: dict[str, int] = {}
        for record in self.records:
            judgement = verdict.diagnose(record, self.events)
            if judgement.cls == "ok":
                continue
            event = verdict.explaining_event(judgement, record, self.events)
            key = "no pod event just before"
            if event is not None:
                offset = (
                    "" if self.t0_mono is None else f" (delete+{event.mono - self.t0_mono:.1f} s)"
                )
                key = f"{event.name}{offset}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "app": self.app,
            "profile": self.profile,
            "config": self.config,
            "trigger": self.trigger,
            "timeout_seconds": self.timeout_seconds or self.plan.timeout_seconds,
            "trigger_at_s": self.plan.trigger_at_s,
            "batches": [b.__dict__ for b in self.plan.batches],
            "summary": self.summary.to_dict(),
            "verdict": "pass" if self.passed else "fail",
            "expected": self.expected_label,
            "expected_catches": sorted(self.expected),
            "expectation_met": self.expectation_met,
            "known_failure": self.known_failure,
            "outcome": self.outcome,
            "problems": self.problems,
            "catches": sorted(self.catches),
            "gone_after_s": self.gone_after_s,
            "ended_pods": self.ended_pods,
            "killed": self.killed,
            "duration_s": round(self.duration_s, 3),
            "failures": verdict.failure_table(self.records, events=self.events),
            "cut_after": self.cut_after(),
            "events": [_event_dict(e, self.t0_mono) for e in self.events],
            "logs": self.logs,
            "records": [verdict.record_verdict(r, self.events, self.t0_mono) for r in self.records],
            **({"restart": self._restart_dict()} if self.restart is not None else {}),
        }

    def _restart_dict(self) -> dict[str, Any]:
        assert self.restart is not None
        refused = self.restart.refused_while_down
        judged = [verdict.record_verdict(r, self.events, self.t0_mono) for r in refused]
        return {**self.restart.to_dict(), "refused_records": judged}


def _event_dict(event: Any, t0: float | None) -> dict[str, Any]:
    data = event.to_dict() if hasattr(event, "to_dict") else dict(event)
    if t0 is not None:
        data["t_from_delete_s"] = round(data["mono"] - t0, 3)
    return data


def run_scenario(
    target: Terminable,
    *,
    scenario: str,
    app: str,
    profile: str,
    plan: ScenarioPlan,
    expected: frozenset[str] = frozenset(),
    trigger: Trigger | None = None,
    config: str = DEFAULT_CONFIG,
    timeout_seconds: int | None = None,
) -> ScenarioResult:
    """Load the pod, fire the trigger at the planned offset, wait for the end, judge.

    ``timeout_seconds`` is the revision's when a Knative config changed the plan's.
    """
    started = time.monotonic()
    trigger = trigger or TRIGGERS["pod-delete"]
    grace = timeout_seconds or plan.timeout_seconds
    faults: list[InfrastructureError] = []

    def fire() -> Any:
        try:
            return target.trigger(trigger)
        except InfrastructureError as exc:  # the platform failed under it: said as such
            faults.append(exc)
            raise

    events = [load.Event(trigger.name, plan.trigger_at_s, fire)]
    bound = plan.last_request_end_s + max(grace, plan.timeout_seconds) + 60  # never unbounded
    result = _load(target, plan.batches, events, bound)
    if faults:
        raise InfrastructureError(f"trigger {trigger.name}: {faults[0]}")
    failed = [e for e in result.events if e.error or e.started_mono is None]
    if failed:
        event = failed[0]
        raise TriggerError(
            f"{scenario}: trigger {event.name} at {event.planned_at:g} s failed, so no pod was "
            f"ended and there is no verdict: {event.error or 'it never ran'}"
        )
    broke = forward_broke(target, result.records)
    if broke:
        raise InfrastructureError(f"{scenario}: {broke}")
    termination = target.wait_gone(max(grace, plan.timeout_seconds) + 60)
    records, planned, restart = result.records, plan.planned, None
    if trigger.family == "container_restart":
        restart = read_restart(records, target.events)
        records, planned = restart.promised, planned - len(restart.refused_while_down)
    summary = verdict.summarize(records, planned=planned, events=target.events)
    out = ScenarioResult(
        scenario=scenario,
        app=app,
        profile=profile,
        plan=plan,
        records=records,
        summary=summary,
        events=list(target.events),
        t0_mono=termination.t0_mono,
        gone_after_s=termination.gone_after_s,
        killed=list(termination.killed),
        expected=expected,
        config=config,
        trigger=trigger.name,
        timeout_seconds=timeout_seconds,
        ended_pods=list(termination.pods),
        restart=restart,
    )
    untested = untested_drain(out)
    if untested:
        raise InfrastructureError(f"{scenario}: {untested}")
    judge_result(out)
    out.duration_s = time.monotonic() - started
    return out


#: queue-proxy's drainSleepDuration: the preStop holds the app's SIGTERM at least this long
#: after its pod's deletion (knowledge: knative-drain-facts.md, section 2)
QUIET_PERIOD_S = 30.0


def app_sigterm_at(events: list[Any], pod: str) -> tuple[float, bool] | None:
    """(when the ended ``pod``'s app got SIGTERM, whether that was seen): seen on local (the
    kubelet's own signal event); on a cluster no sooner than the pod's deletion plus the
    quiet period (kubelet's SIGTERM is not in the API)."""
    for e in events:
        if e.pod == pod and e.name == "SIGTERM user-container":
            return e.mono, True
    for e in events:
        if e.pod == pod and e.name == "deletionTimestamp set":
            return e.mono + QUIET_PERIOD_S, False
    return None


def untested_drain(result: ScenarioResult) -> str | None:
    """Why a run that cut nothing proved nothing about the app's SIGTERM, or None.

    A plan whose requests outlast the trigger plus the quiet period is there to hold
    requests across the app's SIGTERM. When the termination comes late (measured: a new
    revision's pods Pending 50 s for CPU at 4 cases at once on one kind node, so the old
    pod was deleted 53 s in and its app signalled after every request had ended), nothing
    was in flight then: a good app "passes" and a broken twin goes "uncaught", both
    meaning nothing. Such a run is no verdict. Runs that cut a request, forced kills,
    activator triggers (the pod that ends is no app's) and plans whose requests end within
    the quiet period by design are left alone.
    """
    plan = result.plan
    trigger = TRIGGERS[result.trigger]
    if trigger.grace_s == 0 or trigger.family == "activator" or not result.ended_pods:
        return None  # a kill by design; or the ended pod is an activator, not the app's
    if plan.last_request_end_s <= plan.trigger_at_s + QUIET_PERIOD_S:
        return None
    if any(verdict.judge(r).cls != "ok" for r in result.records):
        return None
    found = {p: t for p in result.ended_pods if (t := app_sigterm_at(result.events, p))}
    if not found:
        return None  # the platform gave no termination times: nothing to say
    for r in result.records:
        at = found.get(r.pod or "")
        if at is None or r.sent_mono is None:
            continue
        if r.sent_mono < at[0] and (r.finished_mono is None or r.finished_mono > at[0]):
            return None  # in flight across the app's SIGTERM: the run tested it
    t0 = result.t0_mono or 0.0
    said = []
    for pod, (at, seen) in sorted(found.items()):
        ends = [r.finished_mono for r in result.records if r.pod == pod and r.finished_mono]
        last = f"its last request ended at +{max(ends) - t0:.1f} s" if ends else "no request"
        when = "at" if seen else "no sooner than"
        said.append(f"{pod}: app SIGTERM {when} +{at - t0:.1f} s after the trigger, {last}")
    return (
        "inconclusive: no request was in flight on an ended pod when its app got SIGTERM "
        f"({'; '.join(said)}): the termination came too late to test the drain (a slow "
        "trigger: pods Pending for CPU, a slow rollout); no verdict"
    )


def forward_broke(target: Any, records: list[RequestRecord]) -> str | None:
    """Why a case through a port-forward (``--ingress-port`` on an existing cluster) has no
    verdict, or None: the forward stopped listening, so its cuts are its own, not Knative's.

    ``kubectl port-forward`` exits on any error on any of its connections (since Kubernetes
    1.23: kubectl#1169, kubernetes#111825), and Envoy never refuses a connection while it
    listens. So a refused connection, or a forward that no longer opens after failures,
    means the forward broke under the case.
    """
    if not getattr(target, "ingress_forwarded", False):
        return None
    classes = [verdict.judge(r).cls for r in records]
    failed = sum(1 for c in classes if c != "ok")
    if not failed:
        return None
    refused = classes.count("refused")
    down = unreachable(target.url)
    if not refused and not down:
        return None
    why = f"it no longer opens ({down})" if down else f"it refused {refused} connections"
    return (
        f"the port-forward at {target.url} broke during the case: {why}; {failed} of "
        f"{len(records)} requests failed through it, which says nothing about Knative; no "
        "verdict (--ingress-url, or no --ingress-port: the address read from the cluster, "
        "avoids the forward)"
    )


def _load(
    target: Terminable, specs: tuple[BatchSpec, ...], events: list[load.Event], bound: float
) -> load.ScheduleResult:
    """The plan's batches as load: HTTP requests and streams through the load engine,
    websocket sessions through ws_load, gRPC calls through grpc_load (a plan holds one)."""
    headers = getattr(target, "headers", None)  # Host of the ksvc behind a cluster ingress
    if any(b.kind in GRPC_KINDS for b in specs):
        if any(b.kind not in GRPC_KINDS for b in specs):
            raise ValueError("a scenario plan mixes gRPC calls with other batches")
        calls = [
            grpc_load.Calls(
                b.name,
                b.requests,
                b.at_s,
                method="unary" if b.kind == "grpc-unary" else "stream",
                duration_s=b.sleep_s,
            )
            for b in specs
        ]
        return grpc_load.run_grpc_schedule_sync(
            target.url, calls, events, headers=headers, deadline_s=bound
        )
    if any(b.kind == "websocket" for b in specs):
        if any(b.kind != "websocket" for b in specs):
            raise ValueError("a scenario plan mixes websocket sessions with HTTP batches")
        sessions = [
            ws_load.Sessions(
                b.name, b.requests, b.at_s, "/ws", b.interval_s, b.sleep_s, b.client_closes
            )
            for b in specs
        ]
        return ws_load.run_ws_schedule_sync(
            target.url, sessions, events, headers=headers, deadline_s=bound
        )
    batches = [_http_batch(b) for b in specs]
    return load.run_schedule_sync(
        target.url,
        batches,
        events,
        expect_body="slept",
        deadline_s=bound,
        headers=headers,
        tls=getattr(target, "tls", None),  # internal TLS: trust and names, as the activator
    )


def _http_batch(b: BatchSpec) -> load.Batch:
    if b.kind == "stream":
        path = f"/stream?duration={int(b.sleep_s * 1000)}&interval={int(b.interval_s * 1000)}"
        return load.Batch(b.name, b.requests, at_s=b.at_s, path=path, expect_end=STREAM_END)
    return load.Batch(b.name, b.requests, at_s=b.at_s, path=f"/?sleep={int(b.sleep_s * 1000)}")


def judge_result(result: ScenarioResult) -> None:
    """Fill ``problems`` and ``catches``: what went wrong and which component showed it."""
    problems = verdict.check_slo(result.summary, result.plan.min_strict_sli)
    catches = set(result.summary.signatures)
    forced = TRIGGERS[result.trigger].grace_s == 0  # a kill by design, not the app's doing
    if result.killed and not forced:
        catches.add("sigkill")
        problems.append(sigkill_problem(result))
    inconclusive = _cut_batch_problem(result)
    if inconclusive:
        problems.append(inconclusive)
    if result.restart is not None and result.restart.problems:
        catches.add("not-ready-again")
        problems += result.restart.problems
    limit = result.plan.max_gone_s
    if limit is not None and (result.gone_after_s is None or result.gone_after_s > limit):
        catches.add("slow-deletion")
        problems.append(f"pod gone {result.gone_after_s} s after delete; must be <= {limit:g} s")
    result.problems = problems
    result.catches = catches


def sigkill_problem(result: ScenarioResult) -> str:
    """What a SIGKILL at the end of the grace period says, as far as the timeline shows it.

    Only a SIGKILLed user container means the app never exited on SIGTERM. When the app
    exited on its own and something else was SIGKILLed (queue-proxy holding a response,
    an activator), saying the app ignored SIGTERM would blame the wrong component.
    """
    grace = result.timeout_seconds or result.plan.timeout_seconds
    killed = ", ".join(result.killed)
    what = "the restart" if TRIGGERS[result.trigger].family == "container_restart" else "deletion"
    head = f"{what} took the full grace period ({grace} s): SIGKILL of {killed}"
    if "user-container" in result.killed:
        return head + "; the app never exited on SIGTERM (shell-form CMD keeps /bin/sh as PID 1?)"
    exits = [
        e
        for e in result.events
        if e.name == "user-container exited" and "SIGKILL" not in getattr(e, "detail", "")
    ]
    if exits and result.t0_mono is not None:
        first = min(exits, key=lambda e: e.mono)
        return (
            f"{head}; the app exited on its own ({first.detail}; seen "
            f"{first.mono - result.t0_mono:.1f} s after the trigger): {killed} held on until "
            "the end of the grace period"
        )
    return head


def _cut_batch_problem(result: ScenarioResult) -> str | None:
    """Where the platform chose which pods end: did any ``cut_batch`` request meet one?

    A failed request of the batch did (nothing else cuts it); an answered one did if the
    pod that answered (x-pod-name) is among the ended pods. If none did, the run proved
    nothing about draining, whatever the app: it must not count as a pass.
    """
    batch = result.plan.cut_batch
    if batch is None:
        return None
    mine = [r for r in result.records if r.batch == batch]
    if any(verdict.judge(r).cls != "ok" for r in mine):
        return None
    ended = set(result.ended_pods)
    if any(r.pod in ended for r in mine):
        return None
    served = sorted({r.pod or "?" for r in mine})
    return (
        f"inconclusive: none of the {len(mine)} '{batch}' requests was on a pod that ended "
        f"(ended: {', '.join(sorted(ended)) or 'none'}; they were answered by "
        f"{', '.join(served)}): the run proves nothing about draining; run it again"
    )


def expectation_problem(result: ScenarioResult) -> str | None:
    """None when the outcome is what the app's expectation says, else why not."""
    expected = result.expected
    if not expected:
        if result.passed:
            return None
        return f"{result.app} must drain cleanly in {result.label}: " + "; ".join(result.problems)
    if not result.catches & expected:
        return (
            f"negative control {result.app} was NOT caught in {result.label} "
            f"(expected one of {sorted(expected)}, saw {sorted(result.catches) or 'none'}): "
            "the gate cannot fail here"
        )
    return None
