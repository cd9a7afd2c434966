"""Make ``docker run --privileged`` work on a host whose capability bounding set is short.

kind starts its nodes with ``--privileged`` and offers no way to pass ``--runtime``, so
where the host cannot grant every capability Docker asks for, the capability-filtering
runc front end (``runc_bounded_caps.py``) becomes Docker's *default* runtime: registered
in ``/etc/docker/daemon.json`` and live-reloaded with SIGHUP (no daemon restart, running
containers untouched). Applied only where the bounding set lacks something, and said so:
:func:`ensure_privileged_runtime` returns what it did for the run's report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from . import runc_bounded_caps
from .docker_engine import docker_client

RUNTIME_NAME = "knative-drain-runc"
SHIM_PATH = Path("/usr/local/lib/knative-drain/runc-bounded-caps")
DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKER_PID = Path("/var/run/docker.pid")


class PrivilegedRuntimeError(RuntimeError):
    """Privileged containers cannot start here and the fix could not be applied."""


def _interpreter() -> str:
    """The system Python when there is one: a virtualenv's may be deleted, and a shim whose
    interpreter is gone would stop every container on the host."""
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return getattr(sys, "_base_executable", sys.executable)  # never a virtualenv's


def shim_source(real_runc: str, interpreter: str | None = None) -> str:
    """The shim script: ``runc_bounded_caps.py`` pinned to this host's runc and Python."""
    interpreter = interpreter or _interpreter()
    source = Path(runc_bounded_caps.__file__).read_text()
    pinned = source.replace(
        f'DEFAULT_REAL_RUNC = "{runc_bounded_caps.DEFAULT_REAL_RUNC}"',
        f"DEFAULT_REAL_RUNC = {real_runc!r}",
    )
    return f"#!{interpreter} -IS\n{pinned}"


def _daemon_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise PrivilegedRuntimeError(f"cannot read {path}: {exc}") from None


def _default_runtime() -> str:
    client = docker_client(timeout=30)
    try:
        return str(client.info().get("DefaultRuntime", ""))
    finally:
        client.close()


def ensure_privileged_runtime(progress: Callable[[str], None] = print) -> str | None:
    """None when the host grants every capability; else install and select the shim
    (idempotent) and return a one-line account of it for the report."""
    missing = runc_bounded_caps.missing_capabilities()
    if not missing:
        return None
    account = (
        f"Docker default runtime {RUNTIME_NAME} ({SHIM_PATH}): the host's capability "
        f"bounding set lacks {', '.join(missing)}, so privileged containers get every "
        "capability but those"
    )
    real_runc = shutil.which("runc", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
    if real_runc is None:
        raise PrivilegedRuntimeError("runc is not installed (Docker's runtime): cannot wrap it")
    source = shim_source(real_runc)
    current = SHIM_PATH.read_text() if SHIM_PATH.exists() else None
    if _default_runtime() == RUNTIME_NAME and current == source:
        return account
    if os.geteuid() != 0:
        raise PrivilegedRuntimeError(
            f"privileged containers (kind nodes) cannot start here: the capability bounding "
            f"set lacks {', '.join(missing)}; registering the filtering runtime needs root"
        )
    progress(f"privileged containers: host lacks {', '.join(missing)}; installing {SHIM_PATH}")
    SHIM_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = SHIM_PATH.with_suffix(".tmp")
    tmp.write_text(source)
    tmp.chmod(0o755)
    os.replace(tmp, SHIM_PATH)
    config = _daemon_config(DAEMON_JSON)
    config.setdefault("runtimes", {})[RUNTIME_NAME] = {"path": str(SHIM_PATH)}
    config["default-runtime"] = RUNTIME_NAME
    DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
    backup = DAEMON_JSON.with_name(DAEMON_JSON.name + ".knative-drain.bak")
    if DAEMON_JSON.exists() and not backup.exists():  # the operator's own, kept once
        backup.write_bytes(DAEMON_JSON.read_bytes())
    staged = DAEMON_JSON.with_name(DAEMON_JSON.name + ".knative-drain.tmp")
    staged.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(staged, DAEMON_JSON)
    _reload_dockerd()
    return account


def _reload_dockerd(timeout_s: float = 30.0) -> None:
    """SIGHUP dockerd (it re-reads ``runtimes`` and ``default-runtime``) and wait for it."""
    try:
        os.kill(int(DOCKER_PID.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise PrivilegedRuntimeError(
            f"{DAEMON_JSON} now selects {RUNTIME_NAME}, but dockerd could not be told "
            f"({DOCKER_PID}: {exc}); restart the Docker daemon"
        ) from None

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type((AssertionError, docker.errors.DockerException)),
    )
    def selected() -> None:
        assert _default_runtime() == RUNTIME_NAME

    try:
        selected()
    except RetryError:
        raise PrivilegedRuntimeError(
            f"dockerd did not select {RUNTIME_NAME} within {timeout_s:.0f} s after SIGHUP; "
            f"check {DAEMON_JSON} and restart the Docker daemon"
        ) from None
