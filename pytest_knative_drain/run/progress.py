"""One line per finished case: cases done of total, time gone, what is running.

Why: a release's cluster suite runs 43 minutes, cases at once on a pool, and pytest shows a
test only when its turn to be reported comes; a long case holds back the dots of every
case that finished after it. ``sonobuoy status`` answers "how far along is it" for a
Kubernetes conformance run; this is the same answer, said as each case ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: running cases named in a line; the rest are counted
NAMED = 4


def clock_text(seconds: float) -> str:
    """``754.2`` -> ``"12:34"``; an hour or more -> ``"1:02:03"``."""
    s = int(seconds)
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CaseProgress:
    """Counts cases as they start and end (from any thread), one line per end; the lines
    wait in :meth:`take` for the main thread, the one that may write past pytest's capture
    (a line written from a pool thread lands in whichever test's captured output)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self._clock = clock
        self._lines: list[str] = []
        self._began = clock()
        self._running: dict[str, float] = {}  # case id -> when it started
        self._lock = threading.Lock()

    def started(self, case_id: str) -> None:
        with self._lock:
            self._running[case_id] = self._clock()

    def finished(self, case_id: str, outcome: str) -> str:
        """Count ``case_id`` done with ``outcome`` (met, NOT MET, error...); its line."""
        with self._lock:
            now = self._clock()
            took = now - self._running.pop(case_id, now)
            self.done += 1
            total = max(self.total, self.done)  # a case run twice is still counted
            running = sorted(self._running, key=self._running.__getitem__)
            line = (
                f"{self.done}/{total} cases done after "
                f"{clock_text(now - self._began)}: {case_id} {outcome} in {clock_text(took)}"
            )
            if running:
                named = ", ".join(running[:NAMED])
                more = f" and {len(running) - NAMED} more" if len(running) > NAMED else ""
                line += f"; running {len(running)}: {named}{more}"
            self._lines.append(line)
        return line

    def take(self) -> list[str]:
        """The lines not taken yet, oldest first."""
        with self._lock:
            lines, self._lines = self._lines, []
        return lines
