"""The per-case progress line (run/progress.py), on a clock the test sets."""

from __future__ import annotations

import threading

from pytest_knative_drain.run.progress import CaseProgress, clock_text


def test_a_line_says_done_of_total_time_gone_and_what_runs() -> None:
    now = [100.0]
    progress = CaseProgress(7, clock=lambda: now[0])
    for i, case in enumerate(("a-go-shutdown", "b", "c", "d", "e", "f")):
        now[0] = 100.0 + i
        progress.started(case)
    now[0] = 100.0 + 754.2
    progress.finished("c", "met (strict SLI 1.000)")
    assert progress.take() == [
        "1/7 cases done after 12:34: c met (strict SLI 1.000) in 12:32; "
        "running 5: a-go-shutdown, b, d, e and 1 more"
    ]
    assert progress.take() == []  # each line is taken once
    for case in ("a-go-shutdown", "b", "d", "e", "f"):
        progress.finished(case, "NOT MET (strict SLI 0.000)")
    said = progress.take()
    assert len(said) == 5 and said[-1].startswith("6/7 cases done") and "running" not in said[-1]
    progress.finished("again", "error")  # a case run twice, or not from the pool
    assert progress.finished("again2", "error").startswith("8/8 cases done")


def test_threads_count_every_case_once() -> None:
    progress = CaseProgress(200)

    def run(n: int) -> None:
        for i in range(20):
            progress.started(f"{n}-{i}")
            progress.finished(f"{n}-{i}", "met")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.done == 200
    said = progress.take()
    assert sorted(int(line.split()[0].split("/")[0]) for line in said) == list(range(1, 201))


def test_clock_text() -> None:
    assert (clock_text(0), clock_text(59.9), clock_text(754.2)) == ("0:00", "0:59", "12:34")
    assert clock_text(3723) == "1:02:03"
