"""SIGTERM, SIGHUP and SIGINT stop a run like Ctrl-C, leave nothing, and say so (exit 2).

Every signal here is real: a child pytest signals itself at a chosen line (in a test, in a
teardown, in pytest_sessionfinish), or, for the local platform, the test sends the signal to
a real conformance run during pod start, load and the wait for the pod's end, then counts
its containers, networks and temp files (``signal_trial``).
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


def _default_signals() -> None:
    """Children start as from a shell, even if this run inherited SIGINT/SIGHUP ignored."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _run(
    pytester: pytest.Pytester, *args: str, ignore: signal.Signals | None = None
) -> subprocess.CompletedProcess[str]:
    """A child pytest with this plugin; ``ignore``: a signal its parent set to SIG_IGN."""

    def preexec() -> None:
        _default_signals()
        if ignore is not None:
            signal.signal(ignore, signal.SIG_IGN)

    return subprocess.run(
        [sys.executable, "-m", "pytest", "--platform=local", "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
        check=False,
    )


def _suite(pytester: pytest.Pytester, body: str, conftest: str = "") -> Path:
    """A suite whose fixtures write marks to ``marks/`` when their teardown has finished."""
    pytester.makeconftest(
        textwrap.dedent(
            """
            import os, signal, time
            from pathlib import Path
            import pytest

            MARKS = Path(__file__).parent / "marks"
            MARKS.mkdir(exist_ok=True)

            def mark(name):
                (MARKS / name).write_text("done")

            @pytest.fixture(scope="session")
            def platform():
                yield
                mark("session-teardown")

            @pytest.fixture
            def pod(platform):
                yield
                mark("pod-teardown")
            """
        )
        + textwrap.dedent(conftest)
    )
    pytester.makepyfile(test_suite=textwrap.dedent(body))
    return pytester.path / "marks"


def _marks(where: Path) -> set[str]:
    return {p.name for p in where.iterdir()} if where.exists() else set()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_in_a_test_stops_the_run_and_tears_everything_down(
    pytester: pytest.Pytester, sig: signal.Signals
) -> None:
    marks = _suite(
        pytester,
        f"""
        import os, signal, time
        from conftest import mark

        def test_signalled(pod):
            os.kill(os.getpid(), signal.{sig.name})
            time.sleep(30)
            mark("test-went-on")

        def test_after(pod):
            mark("next-test-ran")
        """,
    )
    done = _run(pytester)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert f"Interrupted: {sig.name} received" in done.stdout
    assert (
        done.stdout.strip()
        .splitlines()[-1]
        .startswith(f"knative-drain: run interrupted by {sig.name}")
    )
    assert _marks(marks) == {"pod-teardown", "session-teardown"}
    assert "Traceback" not in done.stdout + done.stderr


def test_a_second_signal_during_teardown_is_ignored_and_teardown_finishes(
    pytester: pytest.Pytester,
) -> None:
    marks = _suite(
        pytester,
        """
        import os, signal, time
        import pytest
        from conftest import mark

        @pytest.fixture
        def slow_cleanup():
            yield
            os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C
            os.kill(os.getpid(), signal.SIGTERM)  # and CI's cancel
            time.sleep(0.2)
            mark("slow-cleanup-finished")

        def test_signalled(pod, slow_cleanup):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        """,
    )
    done = _run(pytester)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert _marks(marks) == {"slow-cleanup-finished", "pod-teardown", "session-teardown"}
    assert "SIGINT again while stopping after SIGTERM: ignored" in done.stderr
    assert "SIGTERM again while stopping after SIGTERM: ignored" in done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("knative-drain: run interrupted by SIGTERM"), last
    assert "2 later signal(s) ignored" in last


def test_a_first_signal_during_teardown_is_held_until_the_teardown_ends(
    pytester: pytest.Pytester,
) -> None:
    """The session's platform is closed in a teardown: a sweep cut half-way leaves things."""
    marks = _suite(
        pytester,
        """
        def test_one(pod):
            pass

        def test_two(pod):
            pass
        """,
        conftest="""
        @pytest.fixture(scope="module", autouse=True)
        def closes_with_a_signal_inside():
            yield
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
            mark("close-finished")
        """,
    )
    done = _run(pytester)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert _marks(marks) == {"close-finished", "pod-teardown", "session-teardown"}
    assert "Interrupted: SIGHUP received" in done.stdout
    assert "2 passed" in done.stdout


def test_a_signal_while_the_report_is_written_is_recorded_not_raised(
    pytester: pytest.Pytester,
) -> None:
    """pytest does not catch a KeyboardInterrupt in pytest_sessionfinish: the evidence
    writers finish, the exit code is still 2 and the last line names the signal."""
    marks = _suite(
        pytester,
        """
        def test_one(pod):
            pass
        """,
        conftest="""
        def pytest_sessionfinish(session):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            mark("report-written")
        """,
    )
    done = _run(pytester)
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout + done.stderr
    assert "report-written" in _marks(marks)
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        done.stdout.strip().splitlines()[-1].startswith("knative-drain: run interrupted by SIGTERM")
    )


def test_a_signal_the_parent_ignores_stays_ignored(pytester: pytest.Pytester) -> None:
    """``nohup`` ignores SIGHUP for its child: the run goes on, as it would without us."""
    marks = _suite(
        pytester,
        """
        import os, signal
        from conftest import mark

        def test_hangup(pod):
            os.kill(os.getpid(), signal.SIGHUP)
            mark("test-went-on")
        """,
    )
    done = _run(pytester, ignore=signal.SIGHUP)
    assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
    assert "test-went-on" in _marks(marks)
    assert "interrupted" not in done.stdout


def test_handlers_are_chained_and_put_back() -> None:
    """Outside pytest: a previous Python handler runs first, a shielded block ends whole,
    and uninstall restores what was there (SIG_DFL for SIGTERM, Ctrl-C's for SIGINT)."""
    script = textwrap.dedent(
        """
        import os, signal
        from pytest_knative_drain.interrupts import Interrupted, SignalGuard, shielded

        seen = []
        signal.signal(signal.SIGHUP, lambda s, f: seen.append("theirs"))
        guard = SignalGuard.install()
        assert SignalGuard.install() is None  # one per process: a nested run keeps it
        try:
            with shielded():
                os.kill(os.getpid(), signal.SIGHUP)
                seen.append("shielded block finished")
        except Interrupted as exc:
            seen.append(f"raised {exc.signame} after the block")
        guard.uninstall(say=seen.append)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        print(seen)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_default_signals,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = ast.literal_eval(done.stdout)
    assert seen[:3] == ["theirs", "shielded block finished", "raised SIGHUP after the block"]
    assert seen[3].startswith("knative-drain: run interrupted by SIGHUP")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "after"),
    [(signal.SIGTERM, "pod+0"), (signal.SIGHUP, "pod+4"), (signal.SIGINT, "pod+18")],
    ids=["SIGTERM-pod-start", "SIGHUP-load", "SIGINT-wait"],
)
def test_local_conformance_run_leaves_nothing_on_a_signal(sig: signal.Signals, after: str) -> None:
    """A real local run (real queue-proxy, real app, pod-delete-short): the signal lands
    during pod start, the load or the wait for the pod's end (``after``: seconds after the
    run's first container appeared); the trial says where it landed."""
    from signal_trial import run_trial

    trial = run_trial(sig, after)
    facts = trial.to_dict()
    assert trial.sent_s is not None, f"the run ended before the signal: {facts}"
    assert trial.exit_code == pytest.ExitCode.INTERRUPTED, trial.output
    assert trial.interrupted_line, trial.output
    assert trial.clean, facts
    assert not trial.traceback, trial.output


@pytest.mark.slow
def test_a_kept_run_keeps_its_containers_on_a_signal() -> None:
    """``--keep-cluster``: the user asked to keep them, so the interrupted run does."""
    import docker
    import docker.errors
    from signal_trial import run_trial

    trial = run_trial(signal.SIGTERM, "pod+4", extra_args=("--keep-cluster",))
    client = docker.from_env()
    try:
        assert trial.exit_code == pytest.ExitCode.INTERRUPTED, trial.output
        assert trial.interrupted_line, trial.output
        assert trial.containers, f"--keep-cluster: the run's pod was removed: {trial.to_dict()}"
    finally:  # kept on purpose by the run; removed here by the test
        for name in trial.containers:  # gone already if another run swept it (owner exited)
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
        client.close()
