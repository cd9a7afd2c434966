"""One real local conformance run stopped by a real signal, and what it left behind.
from conformance_cmd import conformance_cmd

Used by ``tests/test_interrupts.py`` (a few trials) and ``scripts/signal-trials`` (N at
random offsets). The run is ``python -m pytest conformance --platform=local`` in its own
TMPDIR; the signal goes to its pid (as ``kill PID`` and CI runners' cancel do). Leftovers
are counted by what the run marks as its own: containers labelled with its pid
(``knative-drain.owner-pid``, every container the local platform makes carries it), networks
with the run label, and anything in its TMPDIR. Other runs on the same Docker engine are
never counted nor touched.

Loaded into the run with ``-p signal_trial`` this module is also a pytest plugin: on the
interrupt it writes the traceback's function names to ``$KNATIVE_DRAIN_TRIAL_PROBE``, so a
trial says where the signal landed (pod start, load, wait, ...), not only when.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance_cmd import conformance_cmd

ROOT = Path(__file__).resolve().parent.parent
OWNER_LABEL = "knative-drain.owner-pid"
RUN_LABEL = "knative-drain.run"
PROBE_ENV = "KNATIVE_DRAIN_TRIAL_PROBE"
DEFAULT_SELECT = "pod_delete_short and go_shutdown"

# the innermost of the project's frames that has one of these names names the phase
_PHASES = (
    ("cleanup", ("remove", "sweep", "close")),
    ("wait", ("wait_gone",)),
    ("load/trigger", ("run_schedule_sync", "run_scenario")),
    ("pod start", ("_wait_ready", "start", "__enter__")),
    ("provisioning", ("provision", "provision_local", "ensure_engine", "drain_platform")),
)


@dataclass
class Trial:
    signal: str
    planned_s: float  # when the signal was to be sent (see run_trial's ``after``)
    sent_s: float | None  # seconds after the run started; None: the run ended first
    exit_code: int
    ended_s: float  # seconds after the run started when it had exited
    phase: str  # where it landed, from the run's traceback; "finishing": sessionfinish
    containers: list[str]
    networks: list[str]
    temp_left: list[str]
    output: str = field(repr=False)

    @property
    def interrupted_line(self) -> bool:
        return f"run interrupted by {self.signal}" in self.output

    @property
    def after_session(self) -> bool:
        """The signal came after pytest had finished (handlers put back): the default action
        ended the process; the output is a whole run's and its teardown had run."""
        return (
            self.exit_code == -signal.Signals[self.signal]
            and not self.interrupted_line
            and re.search(r"^=+ .* in [0-9.]+s .*=+$", self.output, re.MULTILINE) is not None
        )

    @property
    def as_designed(self) -> bool:
        """Exit 2, the last line names the signal, no traceback (or it came after the run)."""
        if self.sent_s is None or self.after_session:
            return True
        return self.exit_code == 2 and self.interrupted_line and not self.traceback

    @property
    def clean(self) -> bool:
        return not (self.containers or self.networks or self.temp_left)

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.output

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "planned_s": round(self.planned_s, 2),
            "sent_s": None if self.sent_s is None else round(self.sent_s, 2),
            "exit_code": self.exit_code,
            "exited_after_signal_s": None
            if self.sent_s is None
            else round(self.ended_s - self.sent_s, 2),
            "phase": "after the session" if self.after_session else self.phase,
            "interrupted_line": self.interrupted_line,
            "containers_left": self.containers,
            "networks_left": self.networks,
            "temp_left": self.temp_left,
            "traceback": self.traceback,
            "as_designed": self.as_designed,
        }


def _docker_names(kind: str, label: str) -> list[str]:
    listed = subprocess.run(
        ["docker", kind, "ls", "-a", "--filter", f"label={label}", "--format", "{{.Names}}"]
        if kind == "container"
        else ["docker", kind, "ls", "--filter", f"label={label}", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


def _phase(probe: Path) -> str:
    if not probe.exists():
        return "finishing"  # no KeyboardInterrupt raised: it came in pytest_sessionfinish
    names = json.loads(probe.read_text())  # the project's frames, innermost first
    for name in names:
        for phase, markers in _PHASES:
            if name in markers:
                return phase
    return f"other ({names[0] if names else 'outside the project'})"


def run_trial(
    sig: signal.Signals,
    after: float | str,
    *,
    select: str = DEFAULT_SELECT,
    knative_version: str = "1.14",
    extra_args: tuple[str, ...] = (),
    timeout_s: float = 600,
) -> Trial:
    """Start the run, send ``sig`` and count what is left once it exited.

    ``after``: seconds after start, or ``"pod+S"``: S seconds after the run's first
    container appears (``"pod+0"``: during pod start). What the run keeps (``extra_args``
    with ``--keep-cluster``) is listed in the trial, not removed: the caller removes it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="knative-drain-signal-trial-"))
    tmp = workdir / "tmp"
    tmp.mkdir()
    probe = workdir / "probe.json"
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        PROBE_ENV: str(probe),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = conformance_cmd(knative_version, select, "-p", "signal_trial", *extra_args)
    out_path = workdir / "output.txt"
    try:
        with out_path.open("w") as out:
            started = time.monotonic()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=_default_signals,
            )
            try:
                sent, planned = _send_when(proc, sig, after, started, timeout_s)
                code = proc.wait(timeout=timeout_s)
                ended = time.monotonic() - started
            finally:
                if proc.poll() is None:  # the trial itself stopped: the run cleans up, then ends
                    proc.terminate()
                    try:
                        proc.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        return Trial(
            signal=sig.name,
            planned_s=planned,
            sent_s=sent,
            exit_code=code,
            ended_s=ended,
            phase=_phase(probe) if sent is not None else "not sent",
            containers=_docker_names("container", f"{OWNER_LABEL}={proc.pid}"),
            networks=_docker_names("network", RUN_LABEL),
            temp_left=sorted(p.name for p in tmp.iterdir()),
            output=out_path.read_text(errors="replace"),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _default_signals() -> None:
    """The run as a user starts it: a trial started under ``nohup`` or in the background
    (SIGHUP, SIGINT ignored, which the run would rightly keep ignoring) still tests them."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _send_when(
    proc: subprocess.Popen[str],
    sig: signal.Signals,
    after: float | str,
    started: float,
    timeout_s: float,
) -> tuple[float | None, float]:
    """Send ``sig`` at the planned moment; (seconds after start it was sent, planned)."""
    if isinstance(after, str):
        delay = float(after.removeprefix("pod+"))
        while not _docker_names("container", f"{OWNER_LABEL}={proc.pid}"):
            if proc.poll() is not None or time.monotonic() - started > timeout_s:
                return None, float("nan")
            time.sleep(0.05)
        at = time.monotonic() + delay
    else:
        at = started + after
    while time.monotonic() < at:
        if proc.poll() is not None:
            return None, at - started
        time.sleep(min(0.05, max(at - time.monotonic(), 0)))
    if proc.poll() is not None:
        return None, at - started
    os.kill(proc.pid, sig)
    return time.monotonic() - started, at - started


# --- the probe, as a pytest plugin inside the interrupted run ------------------------------


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Write the project's function names on the interrupted stack for ``_phase``."""
    where = os.environ.get(PROBE_ENV)
    if not where:
        return
    names = []
    tb = excinfo.value.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        guard = "interrupts" in code.co_filename or code.co_filename.endswith("signals.py")
        if "pytest_knative_drain" in code.co_filename and not guard:
            names.append(code.co_name)
        tb = tb.tb_next
    Path(where).write_text(json.dumps(names[::-1]))  # innermost first
