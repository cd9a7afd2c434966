"""The case pool's rules, without a cluster: who runs alone, who runs together, stopping.

The cases are the real matrix cells (scenarios.cases); only the work a case does is
replaced by a recorder, since what is tested is the lock and the pool, not Knative.
"""

from __future__ import annotations

import threading
import time

import pytest

from pytest_knative_drain.matrix.apps import APPS
from pytest_knative_drain.matrix.cases import Case, cases, families
from pytest_knative_drain.matrix.configs import CONFIGS
from pytest_knative_drain.matrix.scenarios import SCENARIOS
from pytest_knative_drain.run import scheduler
from pytest_knative_drain.run.scheduler import CLUSTER_CONCURRENCY

ALL = [c for f in families() for c in cases(f, list(APPS))]


def _case(scenario: str, config: str = "default", app: str = "go-shutdown") -> Case:
    return Case(SCENARIOS[scenario], CONFIGS[config], app)


def test_cases_that_change_what_others_see_run_alone() -> None:
    alone = {c.id for c in ALL if scheduler.exclusive(c)}
    for case in ALL:
        changes = (
            case.config.changes_cluster()
            or case.scenario.activator_replicas > 0
            or case.scenario.trigger in ("activator-delete", "activator-kill", "node-drain")
        )
        assert (case.id in alone) == changes, case.id
    assert "activator-delete-long-activator-short-grace-go-shutdown" in alone
    assert "activator-kill-single-activator-go-shutdown" in alone
    assert "node-drain-long-go-exit" in alone
    # per-namespace or per-pod cases share: the local suite never needs the write lock
    assert not any(scheduler.exclusive(c) for c in ALL if "local" in c.platforms)
    assert not scheduler.exclusive(_case("rollout-long"))
    assert not scheduler.exclusive(_case("pod-kill", "single-replica"))


def test_concurrency_bound() -> None:
    assert scheduler.concurrency(None, "local", 62, CLUSTER_CONCURRENCY) == 62
    assert scheduler.concurrency(None, "kind", 40, CLUSTER_CONCURRENCY) == CLUSTER_CONCURRENCY
    assert scheduler.concurrency(None, "existing", 1, CLUSTER_CONCURRENCY) == 1
    assert scheduler.concurrency(8, "local", 62, CLUSTER_CONCURRENCY) == 8
    assert scheduler.concurrency(8, "local", 3, CLUSTER_CONCURRENCY) == 3
    assert scheduler.concurrency(1, "kind", 40, CLUSTER_CONCURRENCY) == 1
    assert scheduler.concurrency(None, "local", 0, CLUSTER_CONCURRENCY) == 1


def test_auto_on_kind_with_a_worker_is_the_measured_six() -> None:
    from pytest_knative_drain.run.scheduler import KIND_WORKER_CONCURRENCY, cluster_concurrency

    assert cluster_concurrency("kind", 0) == CLUSTER_CONCURRENCY == 2
    assert cluster_concurrency("kind", 1) == KIND_WORKER_CONCURRENCY == 6
    assert cluster_concurrency("existing", 1) == CLUSTER_CONCURRENCY  # not our nodes
    assert scheduler.concurrency(None, "kind", 40, cluster_concurrency("kind", 1)) == 6


class Recorder:
    """The work of a case: note who runs beside whom. Shared cases meet at a barrier,
    which they pass only if all of them run at the same time."""

    def __init__(self, shared: int) -> None:
        self.lock = threading.Lock()
        self.active: set[str] = set()
        self.alone_saw: dict[str, set[str]] = {}  # exclusive case -> others running meanwhile
        self.shared_saw: dict[str, set[str]] = {}
        self.barrier = threading.Barrier(shared, timeout=30)

    def __call__(self, case: Case) -> str:
        with self.lock:
            self.active.add(case.id)
            beside = self.active - {case.id}
        alone = scheduler.exclusive(case) is not None
        if alone:
            time.sleep(0.05)  # time for a wrongly admitted case to show up
        else:
            self.barrier.wait()
        with self.lock:
            beside |= self.active - {case.id}
            (self.alone_saw if alone else self.shared_saw)[case.id] = beside
            self.active.discard(case.id)
        return case.id


def test_exclusive_cases_never_overlap_and_shared_ones_do() -> None:
    shared = [
        _case("pod-delete-long", app=a) for a in ("go-shutdown", "go-exit", "python-gunicorn-exec")
    ]
    alone = [
        _case("activator-delete-long", "activator-short-grace"),
        _case("activator-kill", "single-activator"),
        _case("node-drain-long"),
        _case("activator-delete-long", app="go-exit"),
    ]
    recorder = Recorder(len(shared))
    pool = scheduler.CaseScheduler(8, recorder)
    # interleaved: writers arrive while readers hold the lock and while others wait
    order = [alone[0], shared[0], alone[1], shared[1], alone[2], shared[2], alone[3]]
    futures = {c.id: pool.submit(c.id, c) for c in order}
    for case_id, future in futures.items():
        assert scheduler.result_of(future) == case_id
    pool.stop()
    for case_id, beside in recorder.alone_saw.items():
        assert beside == set(), f"{case_id} ran beside {beside}"
    assert set(recorder.alone_saw) == {c.id for c in alone}
    # every shared case passed the barrier: all three ran at the same time
    assert set(recorder.shared_saw) == {c.id for c in shared}


def test_lock_for_an_inline_run_waits_for_the_writer() -> None:
    lock = scheduler.ReadWriteLock()
    entered = threading.Event()
    order: list[str] = []
    with lock.for_case(_case("node-drain-long")):
        reader = threading.Thread(
            target=lambda: (lock.for_case(_case("pod-delete-short")).__enter__(), entered.set())
        )
        reader.start()
        assert not entered.wait(0.2)  # held back while the writer runs
        order.append("writer done")
    assert entered.wait(10)
    order.append("reader in")
    reader.join()
    assert order == ["writer done", "reader in"]


def test_a_waiting_writer_holds_back_new_readers() -> None:
    lock = scheduler.ReadWriteLock()
    events: list[str] = []
    first_reader = lock.reading()
    first_reader.__enter__()
    writer_in = threading.Event()

    def writer() -> None:
        with lock.writing():
            events.append("writer")
            writer_in.set()

    def late_reader() -> None:
        with lock.reading():
            events.append("late reader")

    w = threading.Thread(target=writer)
    w.start()
    while not lock._writers_waiting:  # the writer is queued
        time.sleep(0.01)
    r = threading.Thread(target=late_reader)
    r.start()
    time.sleep(0.1)
    assert events == []  # neither gets in while the first reader holds it
    first_reader.__exit__(None, None, None)
    w.join(10)
    r.join(10)
    assert events == ["writer", "late reader"]


def test_a_case_exception_is_raised_in_the_test_that_takes_it() -> None:
    def run(case: Case) -> None:
        if case.app == "go-exit":
            pytest.skip("refused")  # a BaseException subclass (pytest's outcomes)
        raise RuntimeError(f"{case.id} broke")

    pool = scheduler.CaseScheduler(2, run)
    skipped = pool.submit("a", _case("pod-delete-short", app="go-exit"))
    broken = pool.submit("b", _case("pod-delete-short"))
    with pytest.raises(pytest.skip.Exception, match="refused"):
        scheduler.result_of(skipped)
    with pytest.raises(RuntimeError, match="pod-delete-short-go-shutdown broke"):
        scheduler.result_of(broken)
    assert pool.take("a") is skipped and pool.take("a") is None
    pool.stop()


def test_stop_cancels_queued_cases_and_aborts_running_ones() -> None:
    release = threading.Event()
    started = threading.Event()

    def run(case: Case) -> str:
        started.set()
        assert release.wait(30)
        return case.id

    pool = scheduler.CaseScheduler(1, run)
    running = pool.submit("running", _case("pod-delete-long"))
    queued = pool.submit("queued", _case("pod-delete-short"))
    assert started.wait(10)
    aborted: list[str] = []
    said: list[str] = []
    left = pool.stop(abort=lambda: (aborted.append("abort"), release.set()), say=said.append)
    assert left == 0
    assert aborted == ["abort"]
    assert said == ["stopping 1 running case(s): removing their pods"]
    assert scheduler.result_of(running) == "pod-delete-long-go-shutdown"
    with pytest.raises(scheduler.Stopped):
        scheduler.result_of(queued)
    late = pool.submit("late", _case("deletion-timeliness"))
    assert late.cancelled()
