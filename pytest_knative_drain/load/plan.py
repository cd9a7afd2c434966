"""What a schedule sends and what comes back: batches, events, and the schedule's result.

Plain data with their checks, so a plan is refused with a clear message before any
connection opens; schedule.py runs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .records import RequestRecord


@dataclass
class Batch:
    """``requests`` GETs of ``path`` due ``at_s`` seconds after schedule start.

    ``concurrency`` None sends all at once; otherwise that many slots each send
    their share one after another. ``path`` "/" keeps the URL's own path and query;
    any other value (may hold a query, e.g. "/?sleep=300000") replaces them.
    ``expect_end``: a stream's proof of completeness, the prefix its body's last line must
    have (the fixture apps' ``/stream`` ends with "stream complete: ..."); it replaces the
    schedule's ``expect_body`` for this batch.
    """

    name: str
    requests: int
    at_s: float = 0.0
    path: str = "/"
    concurrency: int | None = None
    expect_end: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Batch name: a non-empty string is required, got {self.name!r}")
        if isinstance(self.requests, bool) or not isinstance(self.requests, int):
            raise ValueError(
                f"Batch {self.name!r} requests: an integer >= 0, got {self.requests!r}"
            )
        if self.requests < 0:
            raise ValueError(f"Batch {self.name!r} requests: an integer >= 0, got {self.requests}")
        if not isinstance(self.at_s, (int, float)) or self.at_s < 0:
            raise ValueError(f"Batch {self.name!r} at_s: seconds >= 0, got {self.at_s!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"Batch {self.name!r} path: must start with '/', got {self.path!r}")
        if self.expect_end is not None and (
            not isinstance(self.expect_end, str) or not self.expect_end
        ):
            raise ValueError(
                f"Batch {self.name!r} expect_end: None or a non-empty string, "
                f"got {self.expect_end!r}"
            )
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise ValueError(
                f"Batch {self.name!r} concurrency: None (all at once) or an integer >= 1, "
                f"got {self.concurrency!r}"
            )

    @property
    def slots(self) -> int:
        """Connections this batch holds at once."""
        if self.concurrency is None:
            return self.requests
        return min(self.concurrency, self.requests)


@dataclass
class Event:
    """A blocking action (docker stop, kubectl delete ...) run off-loop ``at_s`` after start."""

    name: str
    at_s: float
    action: Callable[[], object]

    def __post_init__(self) -> None:
        if not isinstance(self.at_s, (int, float)) or self.at_s < 0:
            raise ValueError(f"Event {self.name!r} at_s: seconds >= 0, got {self.at_s!r}")
        if not callable(self.action):
            raise ValueError(f"Event {self.name!r} action: a callable is required")


@dataclass
class EventRecord:
    """When an event's action really ran, and how it ended."""

    name: str
    planned_at: float
    started_mono: float | None = None
    started_wall: float | None = None
    finished_mono: float | None = None
    finished_wall: float | None = None
    error: str | None = None  # "Type: text" of the exception, or the deadline note
    result: str | None = None  # repr of the return value, shortened

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ScheduleResult:
    """All records of one schedule: one ``RequestRecord`` per planned request, by id."""

    records: list[RequestRecord]
    events: list[EventRecord]
    started_mono: float
    started_wall: float
    planned: int
    finished_mono: float | None = None
    finished_wall: float | None = None

    def start_skew_s(self, batch: str | None = None) -> float | None:
        """Seconds between the first and the last request written (in one batch if named)."""
        sent = [
            r.sent_mono
            for r in self.records
            if r.sent_mono is not None and (batch is None or r.batch == batch)
        ]
        return max(sent) - min(sent) if sent else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "started_mono": self.started_mono,
            "started_wall": self.started_wall,
            "finished_mono": self.finished_mono,
            "finished_wall": self.finished_wall,
            "records": [r.to_dict() for r in self.records],
            "events": [e.to_dict() for e in self.events],
        }
