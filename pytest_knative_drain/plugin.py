"""pytest hooks: options, run state in ``config.stash``, terminal summary, report."""

from __future__ import annotations

import pytest

from . import options as opts
from .report import DrainReport
from .scenarios import APPS

OPTIONS_KEY = pytest.StashKey[opts.DrainOptions]()
REPORT_KEY = pytest.StashKey[DrainReport]()

pytest_plugins = ["pytest_knative_drain.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    options = opts.resolve_options(config)  # pytest.UsageError -> exit 4, no traceback
    config.stash[OPTIONS_KEY] = options
    config.stash[REPORT_KEY] = DrainReport(options)
    config.addinivalue_line("markers", "drain_scenario(name): a Knative drain scenario")
    config.addinivalue_line("markers", "slow: needs Docker images or runs minutes")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``drain_app`` over the fixture apps, or the user's ``--app-image``."""
    if "drain_app" not in metafunc.fixturenames:
        return
    options = metafunc.config.stash[OPTIONS_KEY]
    names = ["custom"] if options.app_image else list(APPS)
    metafunc.parametrize("drain_app", names, indirect=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(REPORT_KEY, None)
    if report is None or not report.results:
        return
    terminalreporter.write_sep("=", "knative drain verdicts")
    for line in report.table_lines():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    report = session.config.stash.get(REPORT_KEY, None)
    options = session.config.stash.get(OPTIONS_KEY, None)
    if report is None or options is None or options.drain_report is None:
        return
    json_path, md_path = report.write(options.drain_report)
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"drain report: {json_path} and {md_path}")
