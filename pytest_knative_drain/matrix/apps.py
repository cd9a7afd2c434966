"""The fixture apps and what each must show in each scenario, as data.

Good apps must pass everywhere; the broken ones are negative controls, each with the
catch kinds of which at least one must show up where its SIGTERM handling matters (a gate
that cannot fail is worthless).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .scenarios import SCENARIOS, TRIGGERS

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


# Scenarios that end a user pod gracefully: there, how the app handles SIGTERM shows.
_USER_POD_ENDS = tuple(
    s
    for s in SCENARIOS
    if SCENARIOS[s].family != "activator" and TRIGGERS[SCENARIOS[s].trigger].grace_s is None
)

_LONG_ON_USER_POD = tuple(s for s in _USER_POD_ENDS if SCENARIOS[s].served_until_s("quick") > 60)
_SHELL_CAUGHT = frozenset({"sigkill", "slow-deletion"})
_DROPS = frozenset({"queue-proxy"})
# What an app that exits at once shows where a cluster blurs who cut. A websocket: kubelet
# reports queue-proxy's and the app's ends in one status update, so the cut is "unknown"
# there (--platform=local names queue-proxy). A stream under responseStartTimeoutSeconds
# on 1.7-1.18: queue-proxy holds it until SIGKILLed (knative/serving#15352) and Envoy
# keeps the client waiting past that, so only the kill shows.
_DROPS_BY_KIND = {
    "websocket-long": frozenset({"queue-proxy", "unknown"}),
    "streaming-long": frozenset({"queue-proxy", "sigkill"}),
}
APPS: dict[str, FixtureApp] = {
    a.name: a
    for a in (
        FixtureApp("python-gunicorn-exec", "drains in-flight requests, then exits"),
        FixtureApp("go-shutdown", "http.Server.Shutdown: drains, then exits"),
        FixtureApp(
            "python-gunicorn-shell",
            "shell-form CMD: /bin/sh is PID 1 and never passes SIGTERM on",
            {name: _SHELL_CAUGHT for name in _USER_POD_ENDS},
        ),
        FixtureApp(
            "python-gunicorn-default-timeout",
            "gunicorn's default --graceful-timeout 30: kills requests 30 s after SIGTERM",
            # its websockets close with 1000 at once on SIGTERM, well inside the 30 s
            {name: _DROPS for name in _LONG_ON_USER_POD if name != "websocket-long"},
        ),
        FixtureApp(
            "go-exit",
            "exits at once on SIGTERM, dropping in-flight requests",
            {name: _DROPS_BY_KIND.get(name, _DROPS) for name in _LONG_ON_USER_POD},
        ),
    )
}
