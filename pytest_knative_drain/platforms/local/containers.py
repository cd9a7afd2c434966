"""What the local pod asks of the Docker engine beyond running containers: when one exited,
by the engine's own clock, and its removal while the engine restarts."""

from __future__ import annotations

import datetime
import re
import time

import requests
from docker.models.containers import Container
from tenacity import Retrying, retry_if_exception_type, wait_fixed

_ENGINE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def engine_time(text: str) -> float | None:
    """Docker's RFC 3339 time with nanoseconds ("2026-12-01T07:20:01.123456789Z") as epoch
    seconds; None for its zero time or anything else."""
    found = _ENGINE_TIME.fullmatch(text or "")
    if found is None or text.startswith("0001-"):
        return None
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    base = datetime.datetime.fromisoformat(found.group(1) + zone).timestamp()
    return base + float(found.group(2) or 0.0)


def remove_container(container: Container, deadline: float) -> None:
    """Force-remove, retried while the engine does not answer (restarting) until ``deadline``."""
    retrying = Retrying(
        stop=lambda _state: time.monotonic() >= deadline,
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(requests.exceptions.ConnectionError),
    )
    retrying(container.remove, force=True)
