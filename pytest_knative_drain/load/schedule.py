"""The schedule runner: batches of HTTP/1.1 requests fired at their instants, raw facts kept.

Why its own client: the gate must see every failure exactly once. aiohttp silently
resends an idempotent GET after a server disconnect and has a 300 s default total
timeout; httpx needed 95 s wall for 3,000 concurrent 15 s requests. This engine has no
retries and no pool: one connection per request with ``Connection: close`` unless reuse
is asked.

Why it is callback-driven: thousands of concurrent requests must cost the CI runner
little CPU. Each connection is a non-blocking socket watched by the event loop
(``add_reader``/``add_writer``), with no task, future, transport or timer per request;
responses are read by a small RFC 9112 parser (http1.py: status line, Content-Length, chunked,
close-delimited bodies; CRLF line endings) that keeps the classification exact.
Timeouts are one deadline sweep over a time-ordered queue; wall-clock stamps derive
from one monotonic/wall anchor per schedule, so both clocks of a record agree.

Start skew is kept low with connect-ahead: a batch's connections are opened
``connect_lead_s`` before its instant, then every request is written in one tight
loop at the instant. Every planned request leaves exactly one ``RequestRecord``.

One connection's life (its state machine) is connection.py; this module owns the plan
(Batch, Event), the runner that drives the slots, and the result.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .connection import (
    _READY,
    ConnectionSlot,
    _mono,
    _short,
)
from .http1 import (
    parse_url,
    request_bytes,
)
from .plan import Batch, Event, EventRecord, ScheduleResult
from .records import RequestRecord
from .tls_socket import ClientTLS

CONNECT_PARALLEL = 256  # connects in flight at once: keeps the server's accept queue sane
FD_RESERVE = 64  # descriptors kept free for the interpreter, logs, event actions
# A burst of thousands of connections allocates long-lived objects that trigger ~160
# young and a full garbage collection: 12% of the engine's CPU. A higher young-generation
# threshold while a schedule runs cuts that to 2%; the old threshold is restored after.
GC_GEN0_THRESHOLD = 20000
USER_AGENT = "pytest-knative-drain"


def _ensure_fds(needed: int) -> None:
    """Raise the soft fd limit to the hard one when the schedule needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + FD_RESERVE
    if want <= soft:
        return
    if hard != resource.RLIM_INFINITY and want > hard:
        raise ValueError(
            f"requests: the schedule may hold {needed} connections at once but the open-file "
            f"limit (RLIMIT_NOFILE) is {hard}; raise it (ulimit -n) or lower "
            "requests/concurrency"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class _BatchRun:
    batch: Batch
    payload: bytes
    slots: list[list[RequestRecord]]
    done: asyncio.Future[None]
    go: bool = False
    ready: list[ConnectionSlot] = field(default_factory=list)
    workers: list[ConnectionSlot] = field(default_factory=list)
    pending: int = 0

    def slot_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self.done.done():
            self.done.set_result(None)

    def crash(self, exc: BaseException) -> None:
        """An engine bug inside a loop callback: fail the schedule loudly, not by a hang."""
        if not self.done.done():
            self.done.set_exception(exc)


class _Runner:
    def __init__(
        self,
        url: str,
        batches: Sequence[Batch],
        events: Sequence[Event],
        *,
        timeout_s: float | None,
        expect_body: str | None,
        reuse_connections: bool,
        headers: Mapping[str, str] | None,
        connect_lead_s: float,
        deadline_s: float | None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.target = parse_url(url)
        self.url = url
        if tls is not None and not isinstance(tls, ClientTLS):
            raise ValueError(f"tls: None or a ClientTLS, got {tls!r}")
        if tls is not None and not self.target.tls:
            raise ValueError(f"tls: settings for TLS given with a plain http:// URL {url!r}")
        self.tls = tls or (ClientTLS.default(self.target.host) if self.target.tls else None)
        for name, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name}: None (no limit) or seconds > 0, got {value!r}")
        if not isinstance(connect_lead_s, (int, float)) or connect_lead_s < 0:
            raise ValueError(f"connect_lead_s: seconds >= 0, got {connect_lead_s!r}")
        if expect_body is not None and not isinstance(expect_body, str):
            raise ValueError(f"expect_body: None or a string, got {expect_body!r}")
        batches = list(batches)
        for b in batches:
            if not isinstance(b, Batch):
                raise ValueError(f"batches: Batch objects are required, got {b!r}")
        names = [b.name for b in batches]
        if len(set(names)) != len(names):
            raise ValueError(f"batches: names must be unique, got {names}")
        for e in events:
            if not isinstance(e, Event):
                raise ValueError(f"events: Event objects are required, got {e!r}")
        self.batches = batches
        self.events = list(events)
        self.timeout_s = timeout_s
        self.expect_body = expect_body
        self.reuse = bool(reuse_connections)
        self.lead = float(connect_lead_s)
        self.deadline_s = deadline_s
        self.header_list = self._headers(headers)
        self.payloads = [self._request(b.path) for b in batches]
        self.records: list[RequestRecord] = []
        for b in batches:
            for _ in range(b.requests):
                self.records.append(RequestRecord(id=len(self.records), batch=b.name, url=url))
        _ensure_fds(sum(b.slots for b in batches))
        self.wall_off = time.time() - _mono()  # re-anchored when the schedule starts
        self.t0 = 0.0
        self.connecting = 0
        self.connect_queue: collections.deque[tuple[ConnectionSlot, int]] = collections.deque()
        self.timeouts: collections.deque[tuple[float, ConnectionSlot, int]] = collections.deque()
        self.sweeper: asyncio.TimerHandle | None = None

    def _headers(self, extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
        out = {
            "host": ("Host", self.target.authority),
            "user-agent": ("User-Agent", USER_AGENT),
            "accept": ("Accept", "*/*"),
        }
        for name, value in (extra or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError(f"headers: names and values must be strings, got {name!r}")
            if name.lower() == "connection":
                raise ValueError("headers: 'Connection' is set by reuse_connections")
            out[name.lower()] = (name, value)
        connection = "keep-alive" if self.reuse else "close"
        return [*out.values(), ("Connection", connection)]

    def _request(self, path: str) -> bytes:
        target = self.target.path if path == "/" else path
        return request_bytes(target, self.header_list)

    # --- shared machinery for the slots ---------------------------------------------------

    def fail(self, rec: RequestRecord, error: str, detail: str) -> None:
        rec.error = error
        rec.error_detail = detail
        m = _mono()
        rec.finished_mono = m
        rec.finished_wall = m + self.wall_off

    def queue_connect(self, slot: ConnectionSlot) -> None:
        """Connect now, or when one of the CONNECT_PARALLEL connects in flight ends."""
        if self.connecting < CONNECT_PARALLEL:
            if slot.connect():
                self.connecting += 1
        else:
            self.connect_queue.append((slot, slot.tok))

    def connect_finished(self) -> None:
        self.connecting -= 1
        queue = self.connect_queue
        while queue and self.connecting < CONNECT_PARALLEL:
            slot, tok = queue.popleft()
            if slot.tok == tok and slot.connect():  # a stale entry timed out while queued
                self.connecting += 1

    def watch(self, slot: ConnectionSlot) -> None:
        """Bound the slot's current phase by ``timeout_s``: one deadline sweep, no timer each.

        Entries are appended in time order with the same timeout, so the deque stays
        sorted and its head is always the next to expire.
        """
        if self.timeout_s is None:
            return
        self.timeouts.append((_mono() + self.timeout_s, slot, slot.tok))
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.timeout_s, self._sweep)

    def _sweep(self) -> None:
        queue = self.timeouts
        now = _mono()
        while queue and queue[0][0] <= now:
            _, slot, tok = queue.popleft()
            if slot.tok == tok:
                try:
                    slot.expire()
                except Exception as exc:  # an engine bug: surface it through the batch
                    slot.run.crash(exc)
        while queue and queue[0][1].tok != queue[0][2]:
            queue.popleft()  # finished long ago: no need to wake up for it
        if self.sweeper is not None:
            self.sweeper.cancel()  # armed by watch() meanwhile, maybe later than the head
        self.sweeper = None
        if queue:
            self.sweeper = self.loop.call_later(max(0.0, queue[0][0] - now), self._sweep)

    def now(self) -> tuple[float, float]:
        m = _mono()
        return m, m + self.wall_off

    # --- the schedule -----------------------------------------------------------------------

    async def run(self) -> ScheduleResult:
        loop = self.loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        self.family, _, _, _, self.addr = infos[0]
        # one clock anchor for the whole schedule: wall = mono + offset, consistent throughout
        self.wall_off = time.time() - _mono()
        called = _mono()  # the deadline counts from here: a hard bound on the call
        # Schedule start leaves the first batch its full connect lead.
        first = min((b.at_s for b in self.batches), default=0.0)
        self.t0 = called + max(0.05, self.lead - first)
        runs: list[_BatchRun] = []
        i = 0
        for b, payload in zip(self.batches, self.payloads, strict=True):
            recs = self.records[i : i + b.requests]
            i += b.requests
            slots = [recs[k :: b.slots] for k in range(b.slots)] if b.requests else []
            runs.append(_BatchRun(b, payload, slots, loop.create_future()))
        event_records = [EventRecord(e.name, float(e.at_s)) for e in self.events]
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(self.events)), thread_name_prefix="drain-event"
        )
        tasks = [asyncio.ensure_future(self._batch(r)) for r in runs]
        tasks += [
            asyncio.ensure_future(self._event(e, rec, executor))
            for e, rec in zip(self.events, event_records, strict=True)
        ]
        deadline_hit = False
        try:
            timeout = None
            if self.deadline_s is not None:
                timeout = called + self.deadline_s - _mono()
            _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else ((), ())
            if pending:
                deadline_hit = True
                for t in pending:
                    t.cancel()
                await asyncio.wait(pending)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # an engine bug: never disguise it as a server fault
        finally:
            for t in tasks:
                t.cancel()
            if self.sweeper is not None:
                self.sweeper.cancel()
            for run in runs:
                for slot in run.workers:
                    slot.abort()
            executor.shutdown(wait=False, cancel_futures=True)
        self._account(runs, deadline_hit)
        fm, fw = self.now()
        return ScheduleResult(
            self.records, event_records, self.t0, self.t0 + self.wall_off, len(self.records), fm, fw
        )

    def _account(self, runs: list[_BatchRun], deadline_hit: bool) -> None:
        """Every planned request ends with a record; unfinished ones hit the deadline."""
        for run in runs:
            for slot in run.slots:
                for rec in slot:
                    if rec.finished_mono is not None:
                        continue
                    if rec.planned_at is None:
                        rec.planned_at = float(run.batch.at_s)
                    where = "was sent" if rec.sent_mono is None else "completed"
                    self.fail(
                        rec,
                        "timeout",
                        f"schedule deadline of {self.deadline_s} s hit before the request {where}",
                    )

    async def _sleep_until(self, offset: float) -> None:
        delay = self.t0 + offset - _mono()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _batch(self, run: _BatchRun) -> None:
        await self._sleep_until(run.batch.at_s - self.lead)
        run.workers = [ConnectionSlot(self, run, recs) for recs in run.slots]
        run.pending = len(run.workers)
        if not run.workers:
            return
        for slot in run.workers:
            slot.next()
        await self._sleep_until(run.batch.at_s)
        run.go = True
        ready, run.ready = run.ready, []
        for slot in ready:  # the tight loop that keeps start skew low
            if slot.phase == _READY:
                slot.write()
        if run.pending:
            await run.done

    async def _event(
        self, event: Event, rec: EventRecord, executor: concurrent.futures.Executor
    ) -> None:
        await self._sleep_until(event.at_s)
        try:
            await run_event(event, rec, executor, self.now)
        except asyncio.CancelledError:
            rec.error = f"schedule deadline of {self.deadline_s} s hit before the event finished"
            raise


async def run_event(
    event: Event,
    rec: EventRecord,
    executor: concurrent.futures.Executor,
    now: Callable[[], tuple[float, float]],
) -> None:
    """Run ``event.action`` in ``executor`` and stamp ``rec``; an exception is recorded, never
    raised (the schedule goes on). Shared by the HTTP and the websocket engines."""
    seen: dict[str, Any] = {}

    def call() -> None:
        seen["started"] = now()
        try:
            seen["result"] = event.action()
        except Exception as exc:  # recorded, the schedule goes on
            seen["error"] = f"{type(exc).__name__}: {exc}"
        seen["finished"] = now()

    try:
        await asyncio.get_running_loop().run_in_executor(executor, call)
    finally:
        rec.started_mono, rec.started_wall = seen.get("started", (None, None))
        if "finished" in seen:
            rec.finished_mono, rec.finished_wall = seen["finished"]
            rec.error = seen.get("error")
            rec.result = _short(seen.get("result"))


async def run_schedule(
    url: str,
    batches: Sequence[Batch],
    events: Sequence[Event] = (),
    *,
    timeout_s: float | None = None,
    expect_body: str | None = None,
    reuse_connections: bool = False,
    headers: Mapping[str, str] | None = None,
    connect_lead_s: float = 0.5,
    deadline_s: float | None = None,
    tls: ClientTLS | None = None,
) -> ScheduleResult:
    """Run batches and events at their offsets; one record per planned request, never retried.

    ``timeout_s`` bounds each request from its write to the end of its body (and each
    connect on its own); ``deadline_s`` bounds the whole call (connect lead included): what
    is still running then is cancelled and recorded as "timeout". Offsets ``at_s`` count
    from ``ScheduleResult.started_mono``, which leaves the first batch its connect lead.
    A "Host" entry in ``headers`` overrides the Host header (Knative ingress routing).
    An https:// URL is spoken over TLS: ``tls`` says whom to trust, the SNI name and a SAN
    the certificate must carry (the system's roots and the URL's host if not given).
    """
    runner = _Runner(
        url,
        batches,
        events,
        timeout_s=timeout_s,
        expect_body=expect_body,
        reuse_connections=reuse_connections,
        headers=headers,
        connect_lead_s=connect_lead_s,
        deadline_s=deadline_s,
        tls=tls,
    )
    with _gc_relaxed():
        return await runner.run()


_gc_lock = threading.Lock()
_gc_schedules = 0  # schedules running now (one per thread when cases run concurrently)
_gc_saved: tuple[int, ...] = ()


@contextlib.contextmanager
def _gc_relaxed() -> Iterator[None]:
    """GC_GEN0_THRESHOLD while any schedule runs: the threshold is the process's, so the
    first schedule in saves it and the last one out puts it back."""
    global _gc_schedules, _gc_saved
    with _gc_lock:
        if _gc_schedules == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_GEN0_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_schedules += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_schedules -= 1
            if _gc_schedules == 0:
                gc.set_threshold(*_gc_saved)


def run_schedule_sync(
    url: str,
    batches: Sequence[Batch],
    events: Sequence[Event] = (),
    *,
    timeout_s: float | None = None,
    expect_body: str | None = None,
    reuse_connections: bool = False,
    headers: Mapping[str, str] | None = None,
    connect_lead_s: float = 0.5,
    deadline_s: float | None = None,
    tls: ClientTLS | None = None,
) -> ScheduleResult:
    """``run_schedule`` for callers without an event loop (pytest tests, the CLI)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_schedule_sync: called inside a running event loop; await run_schedule"
        )
    return asyncio.run(
        run_schedule(
            url,
            batches,
            events,
            timeout_s=timeout_s,
            expect_body=expect_body,
            reuse_connections=reuse_connections,
            headers=headers,
            connect_lead_s=connect_lead_s,
            deadline_s=deadline_s,
            tls=tls,
        )
    )


def run_batch(url: str, requests: int, concurrency: int | None = None, **kw: Any) -> ScheduleResult:
    """One batch named "load" at offset 0: the plain load test."""
    return run_schedule_sync(url, [Batch("load", requests, concurrency=concurrency)], **kw)
