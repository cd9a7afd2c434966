"""Running one coroutine per record at its offset, with the schedule's events, in one loop.

Shared by the engines whose exchanges are long-lived sessions handled by a library
(websocket.py, grpc.py) rather than by the HTTP/1.1 engine's callback slots: each record
gets one task started at ``t0 + offset``, the events run in a thread pool at theirs, and
``deadline_s`` bounds the whole; a record still open then is failed as "timeout".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .plan import Event, EventRecord, ScheduleResult
from .records import RequestRecord
from .schedule import run_event

_mono = time.monotonic
START_LEAD_S = 0.05  # t0 is this far ahead of the call: every task is created before it


class Clock:
    """One monotonic/wall anchor per schedule, so both clocks of a record agree."""

    def __init__(self) -> None:
        self.wall_off = time.time() - _mono()

    def stamp(self) -> tuple[float, float]:
        m = _mono()
        return m, m + self.wall_off


def fail(rec: RequestRecord, clock: Clock, error: str, detail: str) -> None:
    """End ``rec`` now with ``error`` (a class the judge knows) and a readable detail."""
    rec.error, rec.error_detail = error, detail
    rec.finished_mono, rec.finished_wall = clock.stamp()
    rec.body_ok = False


def check_deadline(deadline_s: float | None) -> None:
    if deadline_s is not None and (
        isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or deadline_s <= 0
    ):
        raise ValueError(f"deadline_s: None (no limit) or seconds > 0, got {deadline_s!r}")


async def run_sessions(
    records: Sequence[RequestRecord],
    start: Callable[[RequestRecord, float], Coroutine[Any, Any, None]],
    events: Sequence[Event],
    clock: Clock,
    deadline_s: float | None,
    lead_s: float = 0.0,
) -> ScheduleResult:
    """Run ``start(rec, instant)`` for each record ``lead_s`` before its instant (``t0 +
    rec.planned_at``, monotonic), so it can connect ahead and send at the instant; the
    events run at theirs."""
    t0 = _mono() + max(START_LEAD_S, lead_s)
    tasks = []
    for rec in records:
        instant = t0 + (rec.planned_at or 0.0)
        tasks.append(asyncio.ensure_future(_at(instant - lead_s, start(rec, instant))))
    event_records = [EventRecord(e.name, float(e.at_s)) for e in events]
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, len(events)), thread_name_prefix="drain-event"
    )
    tasks += [
        asyncio.ensure_future(_at(t0 + e.at_s, run_event(e, r, executor, clock.stamp)))
        for e, r in zip(events, event_records, strict=True)
    ]
    try:
        timeout = None if deadline_s is None else t0 + deadline_s - _mono()
        _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else ((), ())
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # a bug here: never disguise it as a server fault
    finally:
        for t in tasks:
            t.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
    for rec in records:
        if rec.finished_mono is None:
            fail(rec, clock, "timeout", f"schedule deadline of {deadline_s} s hit")
    for e in event_records:
        if e.started_mono is not None and e.finished_mono is None and e.error is None:
            e.error = f"schedule deadline of {deadline_s} s hit before the event finished"
    fm, fw = clock.stamp()
    return ScheduleResult(
        list(records), event_records, t0, t0 + clock.wall_off, len(records), fm, fw
    )


async def _at(when: float, coro: Coroutine[Any, Any, None]) -> None:
    delay = when - _mono()
    if delay > 0:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            coro.close()
            raise
    await coro


def run_sync(main: Coroutine[Any, Any, ScheduleResult], name: str) -> ScheduleResult:
    """``asyncio.run(main)`` for callers without an event loop (the runner, tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main)
    main.close()
    raise RuntimeError(f"{name}: called inside a running event loop")
