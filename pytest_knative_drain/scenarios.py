"""Termination scenarios and the expected outcome per fixture app, as data.

Durations are chosen against queue-proxy's fixed 30 s drain quiet period
(``drainSleepDuration``): the user container gets SIGTERM only when the
preStop ``/wait-for-drain`` returns, 30 s after the last new request. A
scenario is "long" when its requests are still in flight at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DRAIN_QUIET_S = 30.0  # pkg/queue/sharedmain/main.go drainSleepDuration


@dataclass(frozen=True)
class BatchSpec:
    name: str
    requests: int
    at_s: float  # offset from schedule start
    sleep_s: float  # how long the app holds each request


@dataclass(frozen=True)
class ScenarioPlan:
    """One scenario at one profile: load shape, trigger time and pass criteria."""

    batches: tuple[BatchSpec, ...]
    trigger_at_s: float
    timeout_seconds: int  # the revision's timeoutSeconds = pod grace period
    min_strict_sli: float = 1.0
    max_gone_s: float | None = None  # deletion must finish by then (timeliness)

    @property
    def planned(self) -> int:
        return sum(b.requests for b in self.batches)

    @property
    def last_request_end_s(self) -> float:
        return max(b.at_s + b.sleep_s for b in self.batches)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    plans: dict[str, ScenarioPlan]  # profile -> plan
    platforms: tuple[str, ...] = ("local", "kind", "existing")

    def plan(self, profile: str) -> ScenarioPlan:
        return self.plans[profile]


def _one(n: int, sleep_s: float) -> tuple[BatchSpec, ...]:
    return (BatchSpec("batch-1", n, 0.0, sleep_s),)


def _two(n: int, sleep_s: float, second_at_s: float) -> tuple[BatchSpec, ...]:
    return (BatchSpec("batch-1", n, 0.0, sleep_s), BatchSpec("batch-2", n, second_at_s, sleep_s))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "pod-delete-short",
            "pod deleted with requests that end inside the 30 s quiet period",
            {
                "quick": ScenarioPlan(_one(50, 10), trigger_at_s=2, timeout_seconds=120),
                "seed": ScenarioPlan(_one(200, 20), trigger_at_s=2, timeout_seconds=300),
            },
        ),
        Scenario(
            "pod-delete-long",
            "pod deleted with requests that outlive the 30 s quiet period "
            "(no upstream test covers this)",
            {
                # SIGTERM reaches the app ~32 s in; gunicorn's default 30 s graceful
                # timeout ends ~62 s; 75 s requests outlive both.
                "quick": ScenarioPlan(_one(50, 75), trigger_at_s=2, timeout_seconds=120),
                "seed": ScenarioPlan(_one(200, 300), trigger_at_s=10, timeout_seconds=600),
            },
        ),
        Scenario(
            "second-batch-during-termination",
            "knative/serving#15211: a second batch reaches the pod while it terminates",
            {
                # batch-2 at 10 s restarts the quiet period: app SIGTERM ~40 s, ends 85 s.
                "quick": ScenarioPlan(_two(50, 75, 10), trigger_at_s=5, timeout_seconds=120),
                "seed": ScenarioPlan(_two(200, 300, 90), trigger_at_s=60, timeout_seconds=600),
            },
        ),
        Scenario(
            "deletion-timeliness",
            "a pod whose app handles SIGTERM is gone well before its grace period",
            {
                # upstream destroypod_test TestDestroyPodTimely: gone < timeout - 30 s
                "quick": ScenarioPlan(
                    _one(10, 5), trigger_at_s=1, timeout_seconds=120, max_gone_s=90
                ),
                "seed": ScenarioPlan(
                    _one(10, 5), trigger_at_s=1, timeout_seconds=300, max_gone_s=270
                ),
            },
        ),
    )
}

PASS = frozenset()  # expected: no problem at all

#: catch kinds: a failure signature ("queue-proxy", "activator", "ingress", "unknown"),
#: "sigkill" (a container had to be killed at the end of the grace period) or
#: "slow-deletion" (pod gone later than the scenario allows).


@dataclass(frozen=True)
class FixtureApp:
    name: str
    sigterm: str  # how it behaves on SIGTERM
    expect: dict[str, frozenset[str]] = field(default_factory=dict)  # scenario -> catch kinds

    def expected(self, scenario: str) -> frozenset[str]:
        """Catch kinds of which at least one must show up; empty = must pass."""
        return self.expect.get(scenario, PASS)

    @property
    def must_pass_everywhere(self) -> bool:
        return not any(self.expect.values())


_SHELL_CAUGHT = frozenset({"sigkill", "slow-deletion"})
APPS: dict[str, FixtureApp] = {
    a.name: a
    for a in (
        FixtureApp("python-gunicorn-exec", "drains in-flight requests, then exits"),
        FixtureApp("go-shutdown", "http.Server.Shutdown: drains, then exits"),
        FixtureApp(
            "python-gunicorn-shell",
            "shell-form CMD: /bin/sh is PID 1 and never passes SIGTERM on",
            {name: _SHELL_CAUGHT for name in SCENARIOS},
        ),
        FixtureApp(
            "python-gunicorn-default-timeout",
            "gunicorn's default --graceful-timeout 30: kills requests 30 s after SIGTERM",
            {
                "pod-delete-long": frozenset({"queue-proxy"}),
                "second-batch-during-termination": frozenset({"queue-proxy"}),
            },
        ),
        FixtureApp(
            "go-exit",
            "exits at once on SIGTERM, dropping in-flight requests",
            {
                "pod-delete-long": frozenset({"queue-proxy"}),
                "second-batch-during-termination": frozenset({"queue-proxy"}),
            },
        ),
    )
}


def resolve_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
