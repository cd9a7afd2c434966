"""The load engine: HTTP/1.1, TLS and websocket clients that send scheduled requests and
keep one record each. Plain Python, no pytest and no platform: importable on its own.

The engine's public names are re-exported here (``from pytest_knative_drain.load import
run_batch``), as they were when the engine was one module.
"""

from .plan import Batch, Event, EventRecord, ScheduleResult
from .schedule import (
    run_batch,
    run_event,
    run_schedule,
    run_schedule_sync,
)

__all__ = [
    "Batch",
    "Event",
    "EventRecord",
    "ScheduleResult",
    "run_batch",
    "run_event",
    "run_schedule",
    "run_schedule_sync",
]
