"""The cases a whole run of the suite holds, and why the suite itself skips some.

One place for the plugin (which marks the skips at collection) and the bundle verifier
(which must tell a skip the suite gives from a case someone left out): both ask here.
"""

from __future__ import annotations

from ..knative import internal_tls
from ..matrix.cases import Case, cases, families


def whole_suite(apps: list[str]) -> list[Case]:
    """Every case of every trigger family for ``apps``, in the suite's order."""
    return [c for family in families() for c in cases(family, apps)]


def skip_reason(case: Case, platform: str, version: str) -> str | None:
    """Why the suite skips ``case`` on ``platform`` at Knative ``version``; None: it runs."""
    if case.config.name == internal_tls.CONFIG:
        why_not = internal_tls.unsupported(version, platform)
        if why_not is not None:
            return f"{case.id}: {why_not}"
    if platform not in case.scenario.platforms and case.scenario.only_on_why:
        return (
            f"{case.scenario.name}: {case.scenario.only_on_why} (this run: --platform={platform})"
        )
    if platform not in case.platforms:
        why = (
            f"trigger {case.scenario.trigger}"
            if platform not in case.scenario.platforms
            else f"Knative config {case.config.name}"
        )
        return (
            f"{case.scenario.name}: {why} needs --platform="
            f"{' or '.join(case.platforms)} (this run: --platform={platform})"
        )
    return None
