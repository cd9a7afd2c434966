"""The cells of the matrix: scenario x Knative configuration x app, and what each must show."""

from __future__ import annotations

from dataclasses import dataclass

from .apps import APPS, PASS
from .configs import CONFIGS, DEFAULT_CONFIG, KnativeConfig
from .scenarios import SCENARIOS, TRIGGERS, Scenario


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: scenario x Knative config x app, and what must happen."""

    scenario: Scenario
    config: KnativeConfig
    app: str  # a fixture app, or "custom" for --app-image

    @property
    def id(self) -> str:
        if self.config.name == DEFAULT_CONFIG:
            return f"{self.scenario.name}-{self.app}"
        return f"{self.scenario.name}-{self.config.name}-{self.app}"

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(p for p in self.scenario.platforms if p in self.config.platforms)

    @property
    def expected(self) -> frozenset[str]:
        """Catch kinds of which one must show; empty: must pass."""
        if self.config.expect:
            return self.config.expect
        app = APPS.get(self.app)
        return app.expected(self.scenario.name) if app is not None else PASS


def cases(family: str, apps: list[str]) -> list[Case]:
    """The matrix of one trigger family: every scenario x applicable config x app.

    Broken-config twins run only with apps that drain cleanly (or the user's image):
    a broken app under a broken config proves nothing.
    """
    out = []
    for scenario in SCENARIOS.values():
        if scenario.family != family:
            continue
        for config in CONFIGS.values():
            if not config.applies_to(scenario):
                continue
            for app in apps:
                if config.expect and app in APPS and not APPS[app].must_pass_everywhere:
                    continue
                out.append(Case(scenario, config, app))
    return out


def families() -> list[str]:
    return sorted({t.family for t in TRIGGERS.values()})
