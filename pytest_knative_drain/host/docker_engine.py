"""A Docker engine that answers: use the running one, or install and start one (Debian, root).

The local platform needs nothing but a Docker engine; on a fresh Debian machine this
module makes one appear (``apt-get install docker.io`` + ``dockerd`` in the background),
so a developer or CI needs no manual setup step. Elsewhere it says what to install.
The daemon it starts is left running on purpose: it is machine infrastructure, shared by
every later run (like a system service), and :func:`ensure_engine` finds it next time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

ENGINE_START_TIMEOUT_S = 60.0
APT_ATTEMPTS = 3


class DockerEngineError(RuntimeError):
    """No Docker engine answers and none could be installed or started here."""


@dataclass(frozen=True)
class DockerEngineInfo:
    """What the engine is: recorded in reports so a result names the engine it ran on."""

    server_version: str
    api_version: str
    storage_driver: str
    cgroup_version: str
    operating_system: str
    installed_now: bool  # this call ran apt-get install docker.io
    started_pid: int | None  # the dockerd this call started, if any
    log_path: Path | None  # that dockerd's log

    def describe(self) -> dict[str, str]:
        return {
            "docker_server_version": self.server_version,
            "docker_api_version": self.api_version,
            "docker_storage_driver": self.storage_driver,
            "docker_cgroup_version": self.cgroup_version,
        }


def state_dir() -> Path:
    """Where this project keeps machine state (dockerd log): $XDG_CACHE_HOME/knative-drain."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "knative-drain"
    path.mkdir(parents=True, exist_ok=True)
    return path


def docker_client(timeout: int = 300) -> docker.DockerClient:
    """A client for the engine named by the environment (DOCKER_HOST or the default socket).

    ``timeout`` bounds each API call; builds and imports can take minutes, hence 300 s.
    """
    return docker.from_env(timeout=timeout)


def engine_answers() -> bool:
    """True when an engine answers a ping right now (no waiting, no side effects)."""
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


def _info(installed_now: bool, pid: int | None, log: Path | None) -> DockerEngineInfo:
    client = docker_client(timeout=30)
    try:
        info = client.info()
        version = client.version()
    finally:
        client.close()
    return DockerEngineInfo(
        server_version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        storage_driver=str(info.get("Driver", "?")),
        cgroup_version=str(info.get("CgroupVersion", "?")),
        operating_system=str(info.get("OperatingSystem", "?")),
        installed_now=installed_now,
        started_pid=pid,
        log_path=log,
    )


def _can_install() -> str | None:
    """None when apt-get as root can install docker.io here, else why not."""
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "this is not a Debian/Ubuntu system with apt-get"
    if os.geteuid() != 0:
        return "installing needs root (run as root, or install Docker yourself)"
    return None


@retry(
    stop=stop_after_attempt(APT_ATTEMPTS),
    wait=wait_exponential(multiplier=5, max=30),
    retry=retry_if_exception_type(subprocess.CalledProcessError),
    reraise=True,
)
def apt_install(*packages: str) -> None:
    """``apt-get update`` + ``apt-get install -y PACKAGES`` (retried: mirrors flake)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        check=True,
        env=env,
        capture_output=True,
    )


def _dockerd_running() -> int | None:
    """The pid of a live dockerd that owns /var/run/docker.pid, if any (still starting?)."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _start_dockerd(log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this process: it is the machine's engine
        )


def _wait_for_engine(timeout_s: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    """Poll until the engine answers; fail at once if the dockerd we started has exited."""

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(DockerEngineError),
    )
    def poll() -> None:
        if proc is not None and proc.poll() is not None:
            raise _DockerdDied(proc.returncode)
        if not engine_answers():
            raise DockerEngineError("engine not answering yet")

    try:
        poll()
    except _DockerdDied as died:
        raise DockerEngineError(
            f"dockerd exited with code {died.args[0]}; log {log}:\n{_tail(log)}"
        ) from None
    except RetryError:
        raise DockerEngineError(
            f"dockerd did not answer within {timeout_s:.0f} s; log {log}:\n{_tail(log)}"
        ) from None


class _DockerdDied(Exception):
    pass


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def ensure_engine(install: bool = True) -> DockerEngineInfo:
    """A Docker engine that answers, installing/starting one when allowed (idempotent).

    Order: an engine that answers is used as is; else (Debian, root) ``docker.io`` is
    installed when ``dockerd`` is missing and ``install`` is true, and ``dockerd`` is
    started in the background with its log under :func:`state_dir`.
    """
    if engine_answers():
        return _info(installed_now=False, pid=None, log=None)
    log = state_dir() / "dockerd.log"
    if os.environ.get("DOCKER_HOST"):
        raise DockerEngineError(
            f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; start that engine, "
            "or unset DOCKER_HOST to use (or start) the local one"
        )
    pid = _dockerd_running()
    if pid is not None:  # started by someone else a moment ago: give it time
        _wait_for_engine(ENGINE_START_TIMEOUT_S, None, log)
        return _info(installed_now=False, pid=None, log=None)
    why_not = _can_install()
    installed = False
    if shutil.which("dockerd") is None:
        if not install:
            raise DockerEngineError(
                "no Docker engine answers and dockerd is not installed; install Docker "
                "(Debian/Ubuntu: apt-get install docker.io) or pass install=True"
            )
        if why_not:
            raise DockerEngineError(
                f"no Docker engine answers and it cannot be installed here: {why_not}. "
                "Install Docker Engine (https://docs.docker.com/engine/install/) and start it."
            )
        try:
            apt_install("docker.io")
        except subprocess.CalledProcessError as exc:
            raise DockerEngineError(
                f"apt-get install docker.io failed ({exc.returncode}) after {APT_ATTEMPTS} "
                f"tries: {(exc.stderr or b'').decode(errors='replace')[-800:]}"
            ) from None
        installed = True
    if os.geteuid() != 0:
        raise DockerEngineError(
            "dockerd is installed but no engine answers, and starting it needs root: "
            "start the Docker service (e.g. sudo systemctl start docker)"
        )
    proc = _start_dockerd(log)
    _wait_for_engine(ENGINE_START_TIMEOUT_S, proc, log)
    return _info(installed_now=installed, pid=proc.pid, log=log)
