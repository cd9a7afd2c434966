"""A real Kubernetes API server for the cluster tests: etcd + kube-apiserver on loopback.

No kubelet, scheduler or controller-manager: objects are stored, validated, admitted,
served and watched exactly as on a cluster, but nothing reconciles them (Deployments
never become Available, namespaces stay Terminating). Tests assert only what an API
server alone decides.

etcd comes from Debian (``apt-get install etcd-server``); kube-apiserver is built by
``scripts/build-kube-apiserver`` from the Go module k8s.io/kubernetes and cached in
``~/.cache/knative-drain/bin``. Both listen on 127.0.0.1 ephemeral ports, keep their data
in a temp dir, and die with the test process (PR_SET_PDEATHSIG) even if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

VERSION = os.environ.get("KUBE_APISERVER_VERSION", "v1.31.14")
REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-kube-apiserver"
CACHE_BIN = (
    Path(os.environ.get("KNATIVE_DRAIN_CACHE", Path.home() / ".cache" / "knative-drain")) / "bin"
)
BUILD_TIMEOUT_S = 40 * 60
TOKEN = "knative-drain-admin-token"  # static admin token, valid only for this temp server
_STASH = pytest.StashKey["KubeApiServer | str"]()


class Unavailable(RuntimeError):
    """The API server cannot be built or started here (tests skip with this reason)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs the child when the test process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def binary(version: str = VERSION) -> Path:
    """The cached kube-apiserver for ``version``, built on first use (Go needed)."""
    cached = CACHE_BIN / f"kube-apiserver-{version}"
    if cached.is_file():
        return cached
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).is_file():
        raise Unavailable(f"kube-apiserver {version} is not cached ({cached}) and Go is missing")
    env = {**os.environ, "PATH": f"{Path(go).parent}:{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    proc = subprocess.run(
        [str(BUILD_SCRIPT), version],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=env,
        check=False,
    )
    if proc.returncode != 0 or not cached.is_file():
        raise Unavailable(f"building kube-apiserver {version} failed: {proc.stderr[-800:]}")
    print(f"[kube-apiserver] built {version} in {time.monotonic() - started:.0f} s")
    return cached


@dataclass
class KubeApiServer:
    """A running etcd + kube-apiserver pair and a kubeconfig for it (admin token)."""

    workdir: Path
    url: str
    kubeconfig: Path
    context: str
    procs: list[subprocess.Popen]

    def stop(self) -> None:
        """Stop kube-apiserver then etcd (TERM, then KILL after 10 s) and remove the data."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self.procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(version: str = VERSION, ready_timeout_s: float = 90) -> KubeApiServer:
    """Start etcd and kube-apiserver in a temp dir; return once /readyz answers ok."""
    apiserver = binary(version)
    etcd = shutil.which("etcd")
    if etcd is None:
        raise Unavailable("etcd not found on PATH (Debian: apt-get install etcd-server)")
    if shutil.which("openssl") is None:
        raise Unavailable("openssl not found (needed for the service-account key)")
    workdir = Path(tempfile.mkdtemp(prefix="knative-drain-kas-"))
    procs: list[subprocess.Popen] = []
    server = KubeApiServer(workdir, "", workdir / "kubeconfig", "knative-drain-test", procs)
    try:
        _launch(server, apiserver, etcd, ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _launch(server: KubeApiServer, apiserver: Path, etcd: str, ready_timeout_s: float) -> None:
    work = server.workdir
    client_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_log = (work / "etcd.log").open("wb")
    server.procs.append(
        subprocess.Popen(
            [
                etcd,
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client_port}",
                f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
            ],
            stdout=etcd_log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    )
    sa_key = work / "sa.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
    )
    (work / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
    certs = work / "certs"
    api_log = (work / "kube-apiserver.log").open("wb")
    server.procs.append(
        subprocess.Popen(
            [
                str(apiserver),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={certs}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
            stdout=api_log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    )
    server.url = f"https://127.0.0.1:{api_port}"
    ca = certs / "apiserver.crt"
    _wait_ready(server, ca, ready_timeout_s)
    server.kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {"server": server.url, "certificate-authority": str(ca)},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": server.context, "context": {"cluster": "test", "user": "admin"}}
                ],
                "current-context": server.context,
            }
        )
    )


def _wait_ready(server: KubeApiServer, ca: Path, timeout_s: float) -> None:
    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(OSError),
    )
    def ready() -> None:
        for proc in server.procs:
            if proc.poll() is not None:
                raise Unavailable(
                    f"{proc.args[0]} exited with {proc.returncode}; log tail: "
                    f"{_tail(server.workdir)}"
                )
        if not ca.is_file():
            raise OSError("serving certificate not written yet")
        context = ssl.create_default_context(cafile=str(ca))
        request = urllib.request.Request(
            server.url + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            if response.read() != b"ok":
                raise OSError("readyz not ok")

    try:
        ready()
    except RetryError as exc:
        raise Unavailable(
            f"kube-apiserver not ready within {timeout_s:.0f} s ({exc.last_attempt.exception()}); "
            f"log tail: {_tail(server.workdir)}"
        ) from None


def _tail(work: Path) -> str:
    parts = []
    for name in ("kube-apiserver.log", "etcd.log"):
        with contextlib.suppress(OSError):
            parts.append(f"{name}: {(work / name).read_text(errors='replace')[-600:]}")
    return " | ".join(parts)


def session_server(config: pytest.Config) -> KubeApiServer:
    """One server per test session, shared by every module; skips if it cannot run here.

    Kept in ``config.stash`` (not a conftest fixture) and stopped by ``config.add_cleanup``,
    which runs at session end whether tests passed, failed or were interrupted.
    """
    found = config.stash.get(_STASH, None)
    if found is None:
        started = time.monotonic()
        try:
            found = start()
            config.add_cleanup(found.stop)
            print(f"[kube-apiserver] {VERSION} ready in {time.monotonic() - started:.1f} s")
        except Unavailable as exc:
            found = str(exc)
        config.stash[_STASH] = found
    if isinstance(found, str):
        _unavailable(found)
    return found


def private_server() -> KubeApiServer:
    """A server of the caller's own (stop it), for tests whose cluster-wide objects (nodes,
    Services other namespaces read) must not meet other modules'; skips as above."""
    try:
        return start()
    except Unavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable skips or fails


def _unavailable(why: str) -> None:
    if os.environ.get("KNATIVE_DRAIN_REQUIRE_KUBE_APISERVER") == "1":  # .ci/run sets it
        pytest.fail(f"no Kubernetes API server for the cluster tests: {why}")
    pytest.skip(f"no Kubernetes API server for the cluster tests: {why}")


def go_module_dir(module: str, version: str) -> Path:
    """Source of a Go module (``go mod download``; read-only module cache), or Unavailable."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).is_file():
        raise Unavailable(f"Go is needed to download {module}@{version}")
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or not info.get("Dir"):
        raise Unavailable(f"go mod download {module}@{version}: {info.get('Error') or proc.stderr}")
    return Path(info["Dir"])
