"""pytest hooks: options, run state in ``config.stash``, evidence (report, JUnit, allure)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from . import options as opts
from .evidence import allure as allure_evidence
from .evidence.report import DrainReport, one_line, write_atomic
from .interrupts import SignalGuard, install_signal_guard
from .knative import known_failures
from .matrix.apps import APPS
from .matrix.cases import Case, cases, families
from .matrix.scenarios import DRAIN_QUIET_S
from .run import suite
from .run.progress import CaseProgress
from .run.runner import ScenarioResult

OPTIONS_KEY = pytest.StashKey[opts.DrainOptions]()
REPORT_KEY = pytest.StashKey[DrainReport]()
SUITE_PROPERTY_KEY = pytest.StashKey[Callable[[str, object], None]]()
SUITE_SLIS_KEY = pytest.StashKey[list[tuple[str, str]]]()
#: one line per evidence writer that failed during the tests, said at the session's end
EVIDENCE_PROBLEMS_KEY = pytest.StashKey[list[str]]()
#: errors of the session fixtures' teardown (platform close, case pool stop): said on their
#: own and failing the run, not folded into the last test's teardown, where pytest would
#: report them under that test's outcome (an XFAIL hides them)
SESSION_END_ERRORS_KEY = pytest.StashKey[list[str]]()
#: SIGTERM/SIGHUP/SIGINT unwind the run like Ctrl-C (see host/signals.py)
SIGNAL_GUARD_KEY = pytest.StashKey[SignalGuard | None]()
#: the session's case progress (one line per finished case), set by the case pool fixture
PROGRESS_KEY = pytest.StashKey[CaseProgress]()
#: kinds of load (stream, websocket) an --app-image does not serve -> what it did instead
UNSERVED_KEY = pytest.StashKey[dict[str, str]]()
#: --drain-bundle: the session's record and the bundle writer
BUNDLE_KEY = pytest.StashKey["BundleRecorder"]()


class ExpectationNotMet(pytest.fail.Exception):  # type: ignore[name-defined,misc]
    """A case whose verdict missed its expectation: the only failure a known Knative
    failure's xfail accepts. A setup error, an infrastructure error or a bug in the suite
    stays an error (before, a KeyError in the preflight read as three expected failures)."""


pytest_plugins = ["pytest_knative_drain.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    opts.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    options = opts.resolve_options(config)  # pytest.UsageError -> exit 4, no traceback
    opts.check_evidence_paths(config)  # JUnit / allure paths, before any platform comes up
    config.stash[OPTIONS_KEY] = options
    config.stash[REPORT_KEY] = DrainReport(options)
    config.stash[SUITE_SLIS_KEY] = []
    config.stash[EVIDENCE_PROBLEMS_KEY] = []
    config.stash[SESSION_END_ERRORS_KEY] = []
    config.stash[SIGNAL_GUARD_KEY] = install_signal_guard(config.pluginmanager)  # after options
    if options.drain_bundle is not None:
        recorder = BundleRecorder(config, options.drain_bundle)
        config.stash[BUNDLE_KEY] = recorder
        config.pluginmanager.register(recorder, "knative-drain-bundle")
    config.addinivalue_line("markers", "drain_scenario(name): a Knative drain scenario")
    config.addinivalue_line(
        "markers",
        "drain_family(name): parametrize drain_case over this trigger family's scenarios x "
        f"Knative configs x apps ({', '.join(families())})",
    )
    config.addinivalue_line("markers", "drain_config(name): the Knative configuration of a case")
    config.addinivalue_line(
        "markers",
        "drain_known_failure(id): a drain-clean app is known to fail this case on this Knative "
        "release (pytest_knative_drain.knative.known_failures); the case is xfail(strict=True)",
    )
    config.addinivalue_line(
        "markers", "slow: needs Docker images, or a scenario whose requests outlive 30 s"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    options = config.stash.get(OPTIONS_KEY, None)
    if options is None or not options.release_substituted:
        return []
    return [f"knative-drain: {options.release_substituted}"]


@pytest.hookimpl(trylast=True)  # after every other unconfigure: signals stay handled till then
def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(SIGNAL_GUARD_KEY, None)
    if guard is not None:
        guard.uninstall(say=_say(config))  # after a signal, the run's last line names it


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The matrix: ``drain_case`` over a family's cases, else ``drain_app`` over the apps.

    Apps are the fixture apps, or only the user's ``--app-image`` ("custom"). A case whose
    scenario or config cannot run on ``--platform`` is skipped at collection with the reason.
    """
    options = metafunc.config.stash[OPTIONS_KEY]
    apps = ["custom"] if options.app_image else list(APPS)
    if "drain_case" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("drain_family")
        if marker is None or not marker.args or marker.args[0] not in families():
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: drain_case needs @pytest.mark.drain_family(name) "
                f"with one of: {', '.join(families())}"
            )
        params = [_case_param(c, options) for c in cases(marker.args[0], apps)]
        metafunc.parametrize("drain_case", params, indirect=True)
    elif "drain_app" in metafunc.fixturenames:
        metafunc.parametrize("drain_app", apps, indirect=True)


def _case_param(case: Case, options: opts.DrainOptions) -> object:
    platform = options.platform
    marks = [
        pytest.mark.drain_scenario(case.scenario.name),
        pytest.mark.drain_config(case.config.name),
    ]
    known = known_failures.known_failure(
        case.scenario.name, case.config.name, options.release.version, case.app, options.profile
    )
    if known is not None and not case.expected:  # only a case that must pass can be known
        marks += [
            pytest.mark.drain_known_failure(known.id),
            pytest.mark.xfail(strict=True, reason=known.reason, raises=ExpectationNotMet),
        ]
    if case.scenario.served_until_s("quick") > DRAIN_QUIET_S:
        marks.append(pytest.mark.slow)
    why_not = suite.skip_reason(case, platform, options.release.version)
    if why_not is not None:
        marks.append(pytest.mark.skip(reason=why_not))
    return pytest.param(case, id=case.id, marks=marks)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-k pod_delete_long and go_exit`` selects ``pod-delete-long`` x ``go-exit`` (ids keep
    dashes, which read badly in -k expressions)."""
    for item in items:
        names = [
            str(m.args[0])
            for m in (*item.iter_markers("drain_scenario"), *item.iter_markers("drain_config"))
            if m.args
        ]
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            for value in callspec.params.values():
                if isinstance(value, Case):
                    names += [value.scenario.name, value.config.name, value.app]
                elif isinstance(value, str):
                    names.append(value)
        item.extra_keyword_matches.update(n.replace("-", "_") for n in names if "-" in n)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After a test ran: its scenario results go to JUnit properties and allure."""
    report = item.config.stash.get(REPORT_KEY, None)
    before = len(report.results) if report is not None else 0
    try:
        return (yield)
    finally:
        if report is not None:
            known = item.get_closest_marker("drain_known_failure")
            for result in report.results[before:]:
                if known is not None:
                    result.known_failure = known_failures.by_id(known.args[0]).to_dict()
                _record_result(item, result, report)


def _record_result(item: pytest.Item, result: ScenarioResult, report: DrainReport) -> None:
    """JUnit properties and allure attachments of one result, each on its own: a writer that
    fails is one line at the session's end, never the test's outcome nor the other writer."""
    s = result.summary
    slis = {
        "strict_sli": f"{s.strict_sli:.4f}",
        "upstream_sli": f"{s.upstream_sli:.4f}",
        "requests_ok": f"{s.ok}/{s.planned}",
        "verdict": "pass" if result.passed else "fail",
        "expected": result.expected_label,
        "gone_after_s": "-" if result.gone_after_s is None else f"{result.gone_after_s:.1f}",
    }

    def junit() -> None:
        if item.config.getini("junit_family") in ("xunit1", "legacy"):
            # testcase <properties> are valid in xunit1 only (record_property warns in xunit2)
            item.user_properties.extend(
                (f"drain.{result.scenario}.{k}", v) for k, v in slis.items()
            )
        else:
            item.config.stash[SUITE_SLIS_KEY].extend(
                (f"drain.{item.name}.{result.scenario}.{k}", v) for k, v in slis.items()
            )

    problems = item.config.stash.setdefault(EVIDENCE_PROBLEMS_KEY, [])
    what = f"{item.nodeid} {result.scenario}"
    _isolated(junit, f"JUnit properties of {what}", problems.append)
    if allure_evidence.results_dir(item.config) is not None:
        _isolated(
            lambda: allure_evidence.attach_scenario(result, report.facts()),
            f"allure attachments of {what}",
            problems.append,
        )


def say_progress(config: pytest.Config) -> None:
    """The progress lines of cases that ended, on the terminal past the test's capture
    (main thread only: capture is the main thread's)."""
    progress = config.stash.get(PROGRESS_KEY, None)
    lines = progress.take() if progress is not None else []
    capture = config.pluginmanager.get_plugin("capturemanager")
    if not lines or capture is None:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled():
        # a test's line is always open here (its path and dots, or -v's location); the
        # reporter's own idea of the column is off after lines written under capture
        reporter.write("\n")
        for line in lines:
            reporter.write_line(f"[knative-drain] {line}")


def suite_skip(config: pytest.Config, nodeid: str) -> None:
    """Tell --drain-bundle's record that the suite's own rule skips this test now."""
    recorder = config.stash.get(BUNDLE_KEY, None)
    if recorder is not None:
        recorder.suite_skips.add(nodeid)


def _isolated(write: Callable[[], object], what: str, say: Callable[[str], None]) -> None:
    """Run one evidence writer; its failure is one line, never the end of the others."""
    try:
        write()
    except Exception as exc:  # any failure of this writer: the others still run
        say(f"knative-drain: {what} not written: {one_line(exc)}")


def _say(config: pytest.Config) -> Callable[[str], None]:
    """Write a line to the terminal (stderr when the terminal reporter is off)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        return tr.write_line
    return lambda line: print(line, file=sys.stderr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # said during teardown too, where output capture may swallow it: said again here
    for line in terminalreporter.config.stash.get(SESSION_END_ERRORS_KEY, []):
        terminalreporter.write_line(f"[knative-drain] {line}", red=True)
    report = terminalreporter.config.stash.get(REPORT_KEY, None)
    if report is None or not report.results:
        return

    def table() -> None:
        lines = report.table_lines()  # before the header: a failure prints no empty table
        terminalreporter.write_sep("=", "knative drain verdicts")
        for line in lines:
            terminalreporter.write_line(line)

    _isolated(table, "terminal verdict table", terminalreporter.write_line)


@pytest.hookimpl(tryfirst=True)  # before junitxml writes the file in its own sessionfinish
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every evidence writer on its own: one that fails says so in one line, the rest run.

    The drain report is the run's result (hours of it on the seed profile): written
    atomically, and to the temp dir when its own path cannot be written.
    """
    config = session.config
    report = config.stash.get(REPORT_KEY, None)
    options = config.stash.get(OPTIONS_KEY, None)
    if report is None or options is None:
        return
    say = _say(config)
    for problem in config.stash.get(EVIDENCE_PROBLEMS_KEY, []):
        say(problem)
    if config.stash.get(SESSION_END_ERRORS_KEY, []) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    record = config.stash.get(SUITE_PROPERTY_KEY, None)
    if record is not None:

        def junit_suite() -> None:
            for key, value in report.facts().items():
                record(f"drain.{key}", "none" if value is None else value)
            for key, value in config.stash[SUITE_SLIS_KEY]:
                record(key, value)

        _isolated(junit_suite, "JUnit testsuite properties", say)
    alluredir = allure_evidence.results_dir(config)
    if alluredir is not None:
        files: dict[str, str] = {}
        _isolated(
            lambda: files.update(allure_evidence.session_files(report.facts(), report.environment)),
            "allure session files",
            say,
        )
        for name, text in files.items():
            _isolated(partial(write_atomic, alluredir / name, text), f"allure {name}", say)
    if options.drain_report is not None:
        drain_report = options.drain_report

        def drain() -> None:
            for line in report.save(drain_report):
                say(line)

        _isolated(drain, "drain report", say)


class BundleRecorder:
    """--drain-bundle: what the session collected, deselected, ran, skipped and why, and
    the bundle written once JUnit is (evidence/bundle.py); ``verify`` reads the record."""

    def __init__(self, config: pytest.Config, dest: Path) -> None:
        self.config, self.dest = config, dest
        self.deselected = 0
        self.tests: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self.suite_skips: set[str] = set()  # skipped while running, by the suite's own rule
        self.own_junit = not getattr(config.option, "xmlpath", None)
        if self.own_junit:  # junitxml reads the path in its configure, after this one
            config.option.xmlpath = str(dest.with_name(f".{dest.name}.junit.xml"))

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            callspec = getattr(item, "callspec", None)
            case = callspec.params.get("drain_case") if callspec is not None else None
            self.tests[item.nodeid] = {
                "case": case.id if isinstance(case, Case) else None,
                "outcome": "not run",
                "calls": 0,
                "reruns": 0,
            }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, {"case": None, "calls": 0, "reruns": 0})
        self.log.append(f"{report.nodeid} {report.when} {report.outcome} {report.duration:.2f}s")
        if report.outcome == "rerun":
            test["reruns"] += 1
            return
        if report.when == "call":
            test["calls"] += 1
        xfail = hasattr(report, "wasxfail")
        if report.skipped:
            test["outcome"] = "xfailed" if xfail else "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            test["skip_reason"] = str(reason).removeprefix("Skipped: ")
        elif report.failed:
            test["outcome"] = "failed"
        elif report.when == "call":
            test["outcome"] = "xpassed" if xfail else "passed"
        if report.failed or (report.skipped and report.when == "call"):
            self.log += ["    " + line for line in report.longreprtext.splitlines()]
            for title, text in report.sections:
                self.log += [f"    --- {title} ---", *("    " + x for x in text.splitlines())]

    @pytest.hookimpl(trylast=True)  # after junitxml wrote its file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        _isolated(lambda: self._write(session), "certification bundle", _say(self.config))

    def _write(self, session: pytest.Session) -> None:
        from . import __version__
        from .evidence.bundle import bundle_files, write_bundle

        report = self.config.stash[REPORT_KEY]
        options = self.config.stash[OPTIONS_KEY]
        data = report.to_dict()
        for nodeid in self.suite_skips & set(self.tests):
            self.tests[nodeid]["by_suite"] = True
        junit = Path(self.config.option.xmlpath)
        session_record = {
            "args": list(self.config.invocation_params.args),
            "exit_status": int(session.exitstatus),
            "deselected": self.deselected,
            "selected": len(self.tests),
            "apps": ["custom"] if options.app_image else list(APPS),
            "knative_version": data["knative"].get("version"),
            "tool_version": __version__,
            "python": sys.version.split()[0],
            "pytest": pytest.__version__,
            "plugins": [
                {"name": dist.project_name, "version": dist.version}
                for _, dist in self.config.pluginmanager.list_plugin_distinfo()
            ],
            "tests": self.tests,
        }
        files = bundle_files(
            data,
            report.to_markdown(data),
            junit.read_text() if junit.is_file() else "",
            "\n".join(self.log) + "\n",
            session_record,
            options.product,
        )
        if self.own_junit:
            junit.unlink(missing_ok=True)
        directory, archive = write_bundle(self.dest, files)
        _say(self.config)(f"certification bundle: {directory} and {archive}")
