"""Allure evidence: per scenario one requests file, the timeline, pod events, logs on failure.

Everything here is a no-op unless ``--alluredir`` is given: ``results_dir`` is
the only switch, so a run without allure writes no allure file at all. The
requests file is one JSON document per scenario (never one file per request)
and carries enough to redraw the timeline (``timeline.render_timeline``).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..run import verdict

if TYPE_CHECKING:
    import pytest

    from ..run.runner import ScenarioResult

#: allure categories; allure matches a regex against the whole message/trace (Java matches()).
CATEGORIES: list[dict[str, Any]] = [
    {
        "name": "Negative control not caught (the gate could not fail)",
        "messageRegex": r"(?s).*negative control .* was NOT caught.*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "queue-proxy 502s (app dropped in-flight requests)",
        "messageRegex": r"(?s).*cut by: [^;]*queue-proxy=.*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "activator / ingress 5xx",
        "messageRegex": r"(?s).*cut by: [^;]*(activator|ingress)=.*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "Transport errors (reset, empty reply, refused, timeout, truncated)",
        "messageRegex": r"(?s).*\b(reset|empty_reply|refused|timeout|truncated|protocol_error)=.*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "Pod termination (SIGKILL at grace period end, slow deletion)",
        "messageRegex": r"(?s).*(SIGKILL|pod gone .* after delete|never ran).*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "Infrastructure (Docker, cluster, images, platform)",
        "matchedStatuses": ["broken"],
    },
]

#: client libraries whose versions go into environment.properties
CLIENTS = ("pytest", "pytest-knative-drain", "allure-pytest", "kubernetes", "docker", "pytest-kind")


def results_dir(config: pytest.Config) -> Path | None:
    """The ``--alluredir`` of this run, None when allure is off (then do nothing)."""
    value = getattr(config.option, "allure_report_dir", None)
    return Path(value) if value else None


def requests_document(result: ScenarioResult) -> dict[str, Any]:
    """One JSON-able document with every request of a scenario, judged, plus pod events."""
    records = []
    for r in result.records:
        j = verdict.judge(r)
        data = r.to_dict()
        data.update({"class": j.cls, "signature": j.signature})
        t0 = result.t0_mono
        if t0 is not None:
            for key in ("sent", "finished"):
                mono = data.get(f"{key}_mono")
                data[f"{key}_from_delete_s"] = None if mono is None else round(mono - t0, 3)
        records.append(data)
    return {
        "scenario": result.scenario,
        "app": result.app,
        "profile": result.profile,
        "t0_mono": result.t0_mono,
        "events": [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in result.events],
        "records": records,
    }


def events_text(result: ScenarioResult) -> str:
    """The pod timeline as plain lines: seconds from delete, event, detail."""
    lines = []
    for e in result.events:
        data = e.to_dict() if hasattr(e, "to_dict") else dict(e)
        t = "" if result.t0_mono is None else f"{data['mono'] - result.t0_mono:+9.3f} s  "
        lines.append(f"{t}{data.get('pod', '')}  {data['name']}  {data.get('detail') or ''}")
    return "\n".join(lines) + "\n"


def attach_scenario(result: ScenarioResult, facts: Mapping[str, Any]) -> None:
    """Attach one scenario's evidence to the running allure test (call only when allure is on)."""
    import allure

    from .report import scenario_dict
    from .timeline import render_timeline

    for name, value in (
        ("scenario", result.scenario),
        ("knative config", result.config),
        ("trigger", result.trigger),
        ("app", result.app),
        ("profile", result.profile),
        ("knative", facts.get("knative_version")),
        ("platform", facts.get("platform")),
    ):
        allure.dynamic.parameter(name, value)
    tag = f"{result.label} {result.app}"
    allure.attach(
        json.dumps(scenario_dict(result), indent=2, default=str),
        name=f"verdict {tag}",
        attachment_type=allure.attachment_type.JSON,
    )
    allure.attach(
        json.dumps(requests_document(result), default=str),
        name=f"requests {tag} ({len(result.records)})",
        attachment_type=allure.attachment_type.JSON,
    )
    with tempfile.TemporaryDirectory(prefix="knative-drain-") as tmp:
        png = render_timeline(result, Path(tmp) / "timeline.png")
        allure.attach.file(
            str(png), name=f"timeline {tag}", attachment_type=allure.attachment_type.PNG
        )
    allure.attach(
        events_text(result), name=f"pod events {tag}", attachment_type=allure.attachment_type.TEXT
    )
    if not result.expectation_met or not result.passed:
        for container, text in sorted(result.logs.items()):
            allure.attach(
                text, name=f"log {container}", attachment_type=allure.attachment_type.TEXT
            )


def client_versions() -> dict[str, str]:
    """Installed versions of the client libraries that shaped the run."""
    out = {}
    for name in CLIENTS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_properties(facts: Mapping[str, Any], environment: Mapping[str, Any]) -> str:
    """``environment.properties`` text: Knative, Kubernetes, ingress, platform, kind, clients."""
    import platform as host

    props: dict[str, Any] = {
        "knative.version": facts.get("knative_version"),
        "kubernetes.version": facts.get("kubernetes_version") or "none",
        "ingress": facts.get("ingress") or "none",
        "platform": facts.get("platform"),
        "profile": facts.get("profile"),
        "kind.version": facts.get("kind_version") or "none",
        "kind.node_image": facts.get("kind_node_image") or "none",
        "queue_proxy.image": environment.get("queue_proxy_image") or "none",
        "docker.server": environment.get("docker_server_version") or "none",
        "python": host.python_version(),
    }
    props.update({f"client.{k}": v for k, v in client_versions().items()})
    return "".join(f"{_escape(k)}={_escape(str(v))}\n" for k, v in props.items())


def _escape(text: str) -> str:
    """Java .properties escaping for the characters that would change the meaning."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return re.sub(r"([=:#!])", r"\\\1", text)


def session_files(facts: Mapping[str, Any], environment: Mapping[str, Any]) -> dict[str, str]:
    """name -> text of the allure results dir's session files (environment, categories)."""
    return {
        "environment.properties": environment_properties(facts, environment),
        "categories.json": json.dumps(CATEGORIES, indent=2),
    }


def write_session_files(
    directory: Path, facts: Mapping[str, Any], environment: Mapping[str, Any]
) -> list[Path]:
    """Write environment.properties and categories.json into the allure results dir."""
    from .report import write_atomic

    return [
        write_atomic(directory / name, text)
        for name, text in session_files(facts, environment).items()
    ]
