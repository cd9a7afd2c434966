"""One case of a drain report committed under evidence/: its records and pod timeline, for
tests that check the verdict against what a real run recorded."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from pytest_knative_drain.load.records import RequestRecord
from pytest_knative_drain.platforms.pod import PodEvent

EVIDENCE = Path(__file__).resolve().parents[1] / "evidence"


def case(path: str, scenario: str, config: str, app: str) -> dict[str, Any]:
    """The one scenario entry of ``evidence/<path>`` (or its ``.gz``) for scenario x config
    x app."""
    where = EVIDENCE / path
    gz = where.with_name(where.name + ".gz")
    text = gzip.decompress(gz.read_bytes()).decode() if gz.is_file() else where.read_text()
    report = json.loads(text)
    [found] = [
        s
        for s in report["scenarios"]
        if (s["scenario"], s["config"]["name"], s["app"]) == (scenario, config, app)
    ]
    return found


def records(entry: dict[str, Any]) -> list[RequestRecord]:
    return [RequestRecord.from_dict(r) for r in entry["records"]]


def events(entry: dict[str, Any]) -> list[PodEvent]:
    return [
        PodEvent(e["pod"], e["name"], e["mono"], e["wall"], e["detail"]) for e in entry["events"]
    ]
