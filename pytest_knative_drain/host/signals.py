"""SIGTERM, SIGHUP and SIGINT end a run the way Ctrl-C does, so nothing of the run is left.

Why this way: CI runners and ``timeout`` cancel with SIGTERM, a closed terminal sends
SIGHUP; by default both kill Python outright, and the pause, queue-proxy and app
containers (or the kind cluster) of the run stay behind. pytest already knows how to stop
cleanly on ``KeyboardInterrupt``: it stops running tests, tears down every fixture (the
platform's ``close``: containers swept, namespaces and the kind cluster deleted unless
kept), prints a ``!!! ... !!!`` line and exits with ``ExitCode.INTERRUPTED`` (2). So a
signal raises :class:`Interrupted`, a ``KeyboardInterrupt`` naming the signal, in the main
thread (where Python runs signal handlers); the ``with`` blocks and fixture finalizers
unwind as for Ctrl-C. Threads need nothing: the kubelet emulation threads are daemons,
the load engine's event thread returns as soon as its trigger call does.

Two rules keep the unwinding whole:

* After the first signal every further one (a second Ctrl-C, CI's SIGTERM repeated) is
  ignored with one line on stderr: a second ``KeyboardInterrupt`` raised inside a
  finalizer would end pytest's teardown half-way. SIGKILL still ends the process; what it
  leaves, ``knative-drain cleanup`` (or the next local run's sweep) removes.
* A first signal arriving while pytest tears fixtures down (each test's teardown phase,
  where the session's platform is closed), or inside :func:`shielded` code, is held until
  that ends, then raised: a sweep or ``kind delete cluster`` cut in the middle would leave
  things behind. From ``pytest_sessionfinish`` on (teardown after an interruption, the drain
  report, JUnit, allure) a signal is only recorded, never raised: pytest does not catch a
  ``KeyboardInterrupt`` there, and the run is ending anyway. The exit code is still 2.

Handlers are installed only in the main thread (``signal.signal`` works nowhere else),
from ``pytest_configure`` to the last ``pytest_unconfigure``; before and after, Python's
defaults apply (a SIGTERM after the run ended kills a process with nothing left to clean).
A signal the parent set to be ignored (``nohup``'s SIGHUP, a background job's SIGINT)
stays ignored; another Python handler found at install runs first (if it raises, its
exception unwinds the run instead). ``uninstall`` puts back what was there and says the
run's last line. Child processes that clean up (``kind delete cluster``) run in their own
session, so a signal sent to the whole process group (a terminal's Ctrl-C, ``timeout``)
reaches only pytest, which decides.

This module knows nothing of pytest: ``interrupts.py`` installs the guard from
``pytest_configure`` and adds the hooks that hold a signal during teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``: unwinds like Ctrl-C, and says which signal."""

    __module__ = "builtins"  # as pytest's Failed/Skipped: shown "Interrupted: ...", no path

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(f"{self.signame} received: stopping the run as on Ctrl-C")

    def __str__(self) -> str:
        return str(self.args[0])


class SignalGuard:
    """Installed handlers for :data:`SIGNALS`; at most one active per process."""

    _active: SignalGuard | None = None

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.previous: dict[signal.Signals, _Handler] = {}
        self.received: list[str] = []  # every signal seen, in order
        self.deferred: int | None = None  # a first signal held by a shield
        self.shield_depth = 0
        self.finishing = False  # pytest_sessionfinish began: record signals, raise none
        self.on_interrupted: Callable[[], None] | None = None  # at uninstall, after a signal
        self._write = write or _stderr

    @property
    def interrupted(self) -> str | None:
        """The name of the signal that stopped the run, if one did."""
        return self.received[0] if self.received else None

    @classmethod
    def install(cls, write: Callable[[str], None] | None = None) -> SignalGuard | None:
        """Handle SIGTERM, SIGHUP and SIGINT from now on; None outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if cls._active is not None:  # a nested pytest (pytester): the outer run's guard stays
            return None
        guard = cls(write)
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current == signal.SIG_IGN:  # the parent wants it ignored: so do we
                continue
            guard.previous[sig] = current
            signal.signal(sig, guard._handle)
        cls._active = guard
        return guard

    def uninstall(self, say: Callable[[str], None] | None = None) -> None:
        """Put back the handlers found at install (where ours is still the one installed);
        after a signal, ``say`` the run's last line (interrupted, by which signal) and call
        ``on_interrupted`` (the plugin makes the exit code 2 there)."""
        if self.received and say is not None:
            with contextlib.suppress(OSError):  # SIGHUP: the terminal may be gone
                say(self.last_line())
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self.previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self.previous.clear()
        if SignalGuard._active is self:
            SignalGuard._active = None
        if self.received and self.on_interrupted is not None:  # none of ours can come now
            self.on_interrupted()

    def last_line(self) -> str:
        first, more = self.received[0], len(self.received) - 1
        ignored = f"; {more} later signal(s) ignored while cleaning up" if more else ""
        return (
            f"knative-drain: run interrupted by {first}: tests stopped, fixtures torn down"
            f"{ignored}; exit code 2 (interrupted)"
        )

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # pytest names the line the signal interrupted, not this one
        name = signal.Signals(signum).name
        self.received.append(name)
        if len(self.received) > 1:
            self._write(
                f"knative-drain: {name} again while stopping after {self.received[0]}: ignored "
                f"until the run's containers, namespaces and cluster are removed (SIGKILL "
                f"abandons them; then run `knative-drain cleanup`)"
            )
            return
        previous = self.previous.get(signal.Signals(signum))
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)  # theirs first; if it raises, that exception unwinds
        if self.finishing:
            return
        if self.shield_depth:
            self.deferred = signum
            return
        raise Interrupted(signum)

    def _leave_shield(self) -> None:
        __tracebackhide__ = True
        self.shield_depth -= 1
        if self.shield_depth == 0 and self.deferred is not None and not self.finishing:
            signum, self.deferred = self.deferred, None
            raise Interrupted(signum)


def active() -> SignalGuard | None:
    """The installed guard, if any."""
    return SignalGuard._active


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a cleanup whole: a first signal arriving inside is raised when it ends.

    Without a guard installed (a library call, another thread) it changes nothing.
    """
    guard = SignalGuard._active
    if guard is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    guard.shield_depth += 1
    try:
        yield
    finally:
        guard._leave_shield()


def _stderr(line: str) -> None:
    """One line on stderr from a signal handler: ``os.write``, never the buffered stream
    the interrupted code may be in the middle of writing."""
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) has nowhere to write
        os.write(2, (line + "\n").encode(errors="replace"))
