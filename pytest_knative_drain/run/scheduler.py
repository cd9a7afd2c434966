"""Drain cases at once: a bounded pool of threads in the pytest process, and one lock rule.

Why threads in this process, not pytest-xdist: a case is waiting, not computing (requests
sleep, queue-proxy's 30 s quiet period, the grace period), and every case needs the one
session platform (one provisioning, one contract preflight, one kind cluster, one signal
guard, one drain report). Workers in other processes would each bring up or attach to the
platform, handle signals and clean up on their own, and the evidence would have to be
merged; benchmarks/concurrent_suite.py measures what the two ways cost.

How: when the first test asks for ``drain``, every selected case is submitted here; each
test's ``drain.run(case)`` then waits for its case's future and reports it (pass, fail,
skip, xfail stay per test, in the main thread). The rule: a case that changes what other
cases see (cluster-wide Knative configuration, the activators every request may pass, a
cordoned node) runs alone: it takes the write side of a readers/writer lock, every other
case the read side. Writers are preferred, so a waiting one is not starved by new readers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

from ..matrix.cases import Case

#: pods starting (created, until ready) at once, whatever the concurrency: a pod start is
#: the one busy moment of a case (Docker creates three containers, the readiness probe
#: polls); 62 at once on 2 cores kept dockerd seconds behind on other cases' signals and
#: spread their request starts (benchmarks/RESULTS.md)
POD_STARTS_AT_ONCE = 4

#: --drain-concurrency=auto on kind/existing: Knative, Kourier and the control plane already
#: request 1.875 of this machine's 2 cores on one kind node (evidence/2026-12-01-kind-1.14),
#: and every case adds a Knative Service with its own pods and readiness waits
CLUSTER_CONCURRENCY = 2
#: ... and on kind with a worker node (--kind-workers >= 1), where CPU requests no longer bind:
#: 28 cases of Knative 1.23 at 6 at once, every verdict as expected, CPU mean 53 % of the
#: two cores (benchmarks/results/kind-1.23-concurrency-6-one-worker.json); one node at 4
#: at once left pods Pending for CPU (evidence/2026-12-04-kind-matrix)
KIND_WORKER_CONCURRENCY = 6


def cluster_concurrency(platform: str, kind_workers: int) -> int:
    """What ``auto`` means on a cluster: :data:`KIND_WORKER_CONCURRENCY` on kind with a
    worker, else :data:`CLUSTER_CONCURRENCY`."""
    return KIND_WORKER_CONCURRENCY if platform == "kind" and kind_workers else CLUSTER_CONCURRENCY


#: triggers that end or move something every case shares
EXCLUSIVE_TRIGGERS = {
    "activator-delete": "deletes an activator pod (every case's requests may pass it)",
    "activator-kill": "kills an activator pod (every case's requests may pass it)",
    "node-drain": "cordons and drains a node (other cases' pods may be on it)",
}


def exclusive(case: Case) -> str | None:
    """Why ``case`` must run alone, or None when it may run beside others."""
    if case.config.changes_cluster():
        return f"Knative config {case.config.name} changes cluster-wide configuration"
    if case.scenario.activator_replicas:
        return f"scenario {case.scenario.name} sets the activator's replicas"
    return EXCLUSIVE_TRIGGERS.get(case.scenario.trigger)


def concurrency(requested: int | None, platform: str, cases: int, cluster_default: int) -> int:
    """Cases at once: ``requested``, else every case on local and ``cluster_default`` on a
    cluster; never more than there are cases, never less than 1."""
    bound = requested or (cases if platform == "local" else cluster_default)
    return max(1, min(bound, max(cases, 1)))


def estimated_s(case: Case, profile: str) -> float:
    """A case's rough length, to start the longest first: its last request's end, plus the
    grace period when the app is expected to sit it out (SIGKILL)."""
    plan = case.scenario.plan(profile)
    length = plan.last_request_end_s
    if "sigkill" in case.expected or "slow-deletion" in case.expected:
        length += case.config.timeout_seconds(plan)
    return length


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    def for_case(self, case: Case) -> contextlib.AbstractContextManager[None]:
        return self.writing() if exclusive(case) else self.reading()


class Stopped(Exception):
    """The run is stopping (interrupted, or ended with cases not yet run)."""


class CaseScheduler:
    """Runs submitted cases on at most ``workers`` daemon threads, under :class:`ReadWriteLock`.

    Daemon threads: a thread that is still running when the process must end (SIGKILL
    aside, :meth:`stop` waits for them) never holds the interpreter's exit.
    """

    def __init__(self, workers: int, run: Callable[[Case], Any]) -> None:
        self.workers = workers
        self.lock = ReadWriteLock()
        self.stopping = threading.Event()
        self.pod_starts = threading.Semaphore(POD_STARTS_AT_ONCE)
        self._run = run
        self._queue: list[tuple[Case, Future[Any]]] = []
        self._cond = threading.Condition()
        self._futures: dict[str, Future[Any]] = {}
        self._threads: list[threading.Thread] = []
        self._running = 0

    def submit(self, key: str, case: Case) -> Future[Any]:
        """Queue ``case`` (in submission order) and return its future, kept under ``key``."""
        future: Future[Any] = Future()
        with self._cond:
            if self.stopping.is_set():
                future.cancel()
            else:
                self._queue.append((case, future))
                self._futures[key] = future
                if len(self._threads) < self.workers:
                    thread = threading.Thread(
                        target=self._work, name=f"drain-case-{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
                self._cond.notify()
        return future

    def take(self, key: str) -> Future[Any] | None:
        """The future submitted under ``key``, once (a second call gets None)."""
        with self._cond:
            return self._futures.pop(key, None)

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self.stopping.is_set():
                    self._cond.wait()
                if self.stopping.is_set():
                    return
                case, future = self._queue.pop(0)
                if not future.set_running_or_notify_cancel():
                    continue
                self._running += 1
            try:
                with self.lock.for_case(case):
                    if self.stopping.is_set():
                        raise Stopped("the run is stopping")
                    result = self._run(case)
            except BaseException as exc:  # noqa: BLE001 - the test that takes it re-raises it
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def stop(
        self,
        abort: Callable[[], None] | None = None,
        wait_s: float = 60.0,
        say: Callable[[str], None] | None = None,
    ) -> int:
        """Start no more cases (queued ones are cancelled); if some still run, ``abort`` them
        (e.g. remove their pods so they end at once) and wait up to ``wait_s`` for their
        threads, which clean up what they made. Returns how many were still running then."""
        with self._cond:
            self.stopping.set()
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            self._cond.notify_all()
            running = self._running
        if running and abort is not None:
            if say is not None:
                say(f"stopping {running} running case(s): removing their pods")
            abort()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = sum(t.is_alive() for t in self._threads)
        if left and say is not None:
            say(f"{left} case thread(s) still running after {wait_s:.0f} s; left to the sweep")
        return left


def result_of(future: Future[Any]) -> Any:
    """The case's result, or its exception raised here (in the test's thread)."""
    try:
        return future.result()
    except CancelledError:
        raise Stopped("the case was cancelled: the run is stopping") from None
