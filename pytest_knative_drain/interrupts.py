"""The signal guard's pytest face: installed at ``pytest_configure``, with the hooks that
hold a signal while pytest tears fixtures down and only record it from
``pytest_sessionfinish`` on. What a signal does, and why, is ``host/signals.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .host.signals import Interrupted, SignalGuard, active, shielded

if TYPE_CHECKING:
    import pytest

__all__ = ["Interrupted", "SignalGuard", "active", "install_signal_guard", "shielded"]


def install_signal_guard(pluginmanager: pytest.PytestPluginManager) -> SignalGuard | None:
    """Install the guard and its pytest hooks (teardown shielded, sessionfinish recorded)."""
    guard = SignalGuard.install()
    if guard is not None:
        pluginmanager.register(_pytest_hooks(guard), "knative-drain-interrupts")
    return guard


def _pytest_hooks(guard: SignalGuard) -> object:
    """Where pytest cannot take a ``KeyboardInterrupt`` whole, the guard holds it."""
    import pytest

    class Hooks:
        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_teardown(self) -> Any:
            with shielded():
                return (yield)

        @pytest.hookimpl(wrapper=True, tryfirst=True)  # around every other sessionfinish
        def pytest_sessionfinish(self, session: pytest.Session) -> Any:
            guard.finishing = True

            def interrupted() -> None:  # pytest returns session.exitstatus after unconfigure
                session.exitstatus = pytest.ExitCode.INTERRUPTED

            guard.on_interrupted = interrupted
            return (yield)

    return Hooks()
