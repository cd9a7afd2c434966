"""Faults under a running case are infrastructure errors, never drain verdicts.

Someone else removes one of the pod's containers (real ``docker rm -f`` on the real pod):
the pod says so from ``wait_gone`` at once, the case ends as "infrastructure: ...", the
drain report lists it without a verdict, and the run goes on to the next case. A dockerd
restart is the same fault, tested on a second dockerd of the test's own (socket, data
root, bridge): restarting the machine's engine would stop everyone else's containers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from pytest_knative_drain.builders.kubernetes import RUNTIME_BASE, ensure_runtime_base
from pytest_knative_drain.knative import catalog
from pytest_knative_drain.platforms.local import LABEL, LocalPlatform, LocalPod, RevisionSpec
from pytest_knative_drain.platforms.pod import InfrastructureError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform():
    try:
        p = LocalPlatform.provision(
            catalog.resolve("1.14"),
            apps=["go-shutdown"],
            run_id=f"test-{uuid.uuid4().hex[:6]}",
            progress=lambda _msg: None,
        )
    except Exception as exc:  # noqa: BLE001 - report why the engine/images are missing
        pytest.skip(f"local platform unavailable: {exc}")
    yield p
    p.close()
    assert _left(p.client, f"{LABEL}={p.run_id}") == [], "containers left behind"


def _left(client: docker.DockerClient, label: str) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": label})]


@pytest.mark.parametrize("role", ["user-container", "queue-proxy", "pause"])
def test_a_container_removed_by_someone_else_is_an_infrastructure_error(platform, role):
    with platform.pod("go-shutdown", None, timeout_seconds=60) as pod:
        platform.client.containers.get(f"{pod.name}-{role}").remove(force=True)  # someone else
        pod.delete()
        with pytest.raises(InfrastructureError, match=f"{role} container removed by someone else"):
            pod.wait_gone()
        seen = [e.name for e in pod.events]
    # said at once: not after queue-proxy's 30 s quiet period (preStop still waiting)
    assert "infrastructure fault" in seen and "preStop returned" not in seen, seen
    assert _left(platform.client, f"knative-drain.pod={pod.name}") == []


def test_removal_during_the_drain_is_seen_by_the_engine_watch(platform):
    """After SIGTERM, while preStop waits out the quiet period: nothing polls the app, the
    Docker events watch sees it go."""
    with platform.pod("go-shutdown", None, timeout_seconds=60) as pod:
        pod.delete()
        time.sleep(1)
        platform.client.containers.get(f"{pod.name}-user-container").remove(force=True)
        with pytest.raises(InfrastructureError, match="user-container container removed"):
            pod.wait_gone()
    assert _left(platform.client, f"knative-drain.pod={pod.name}") == []


def test_our_own_removal_is_no_fault(platform):
    with platform.pod("go-shutdown", None, timeout_seconds=60) as pod:
        pass
    time.sleep(0.5)  # the watch would have seen the destroy events by now
    assert pod.fault is None


INNER = """
    import os
    import threading
    import time

    import docker
    import pytest

    pytestmark = pytest.mark.drain_family("pod_delete")
    # someone else removes one container of the pod, 3 s into the case
    FAULTS = {"python-gunicorn-exec": "user-container", "go-shutdown": "queue-proxy",
              "python-gunicorn-default-timeout": "pause"}


    def remove_soon(role, stop):
        client = docker.from_env()
        mine = {"label": [f"knative-drain.owner-pid={os.getpid()}",
                          f"knative-drain.role={role}"], "status": "running"}
        while not stop.is_set():
            found = client.containers.list(filters=mine)
            if found:
                time.sleep(3)
                found[0].remove(force=True)
                return
            time.sleep(0.2)


    def test_pod_delete(drain, drain_case):
        stop = threading.Event()
        role = FAULTS.get(drain_case.app)
        if role:
            threading.Thread(target=remove_soon, args=(role, stop), daemon=True).start()
        try:
            drain.check(drain.run(drain_case))
        finally:
            stop.set()
"""


def test_the_case_ends_as_an_infrastructure_error_and_the_run_goes_on(pytester):
    pytester.makepyfile(test_inner=textwrap.dedent(INNER))
    report = pytester.path / "run.json"
    proc = pytester.popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--platform=local",
            "--knative-version=1.14",
            # one case after another: each fault thread starts when its test runs, so the
            # cases must not all run at once before it (the fault code is the same per pod)
            "--drain-concurrency=1",
            "-k",
            "pod_delete_short and not internal_tls and "
            "(gunicorn_exec or go_shutdown or default_timeout or go_exit)",
            f"--drain-report={report}",
            "-rA",
        ],
        stdin=None,
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode() + err.decode()
    client = docker.from_env()
    assert _left(client, f"knative-drain.owner-pid={proc.pid}") == [], text
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "Exception in thread" not in text, text
    assert "contract preflight: " in text, text
    for app, role in (
        ("python-gunicorn-exec", "user-container"),
        ("go-shutdown", "queue-proxy"),
        ("python-gunicorn-default-timeout", "pause"),
    ):
        assert f"FAILED test_inner.py::test_pod_delete[pod-delete-short-{app}]" in text, text
        assert f"infrastructure: pod-delete-short-{app}: pod {app}-00001-deployment-" in text, text
        assert f"{role} container removed by someone else; no verdict" in text, text
    # the run went on: the next case ran and got its verdict
    assert "PASSED test_inner.py::test_pod_delete[pod-delete-short-go-exit]" in text, text
    data = json.loads(report.read_text())
    assert [s["app"] for s in data["scenarios"]] == ["go-exit"]
    assert sorted(e["case"] for e in data["infrastructure_errors"]) == [
        "pod-delete-short-go-shutdown",
        "pod-delete-short-python-gunicorn-default-timeout",
        "pod-delete-short-python-gunicorn-exec",
    ]
    assert all(e["error"].startswith("infrastructure: ") for e in data["infrastructure_errors"])
    assert data["verdict"] == "incomplete"


CLOSE_FAILS = """
    import pytest

    from pytest_knative_drain.platforms.local import LocalPlatform

    _close = LocalPlatform.close


    def close(self):
        _close(self)  # the platform's containers and network really go
        raise RuntimeError("the engine went away")


    LocalPlatform.close = close


    @pytest.mark.xfail(strict=True, reason="as a recorded Knative failure is")
    def test_last(drain_platform):
        assert False
"""


def test_a_platform_close_error_is_the_runs_own_not_the_last_tests(pytester):
    """Seen once: a close error after a known failure showed as "XFAIL at teardown", exit 0.
    It is the run's own line, an infrastructure error and exit 1, whatever ran last."""
    pytester.makepyfile(test_inner=textwrap.dedent(CLOSE_FAILS))
    report = pytester.path / "run.json"
    proc = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--platform=local"]
        + ["--knative-version=1.14", f"--drain-report={report}", "-rA"],
        stdin=None,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode() + err.decode()
    assert _left(docker.from_env(), f"knative-drain.owner-pid={proc.pid}") == [], text
    assert proc.returncode == 1, text
    assert "1 xfailed" in text and "error" not in text.splitlines()[-1], text
    assert (
        "[knative-drain] closing the local platform failed at the session's end: "
        "RuntimeError: the engine went away" in text
    ), text
    data = json.loads(report.read_text())
    assert data["verdict"] == "incomplete"
    assert data["infrastructure_errors"] == [
        {
            "case": "session end",
            "error": "closing the local platform failed at the session's end: "
            "RuntimeError: the engine went away",
        }
    ]


class IsolatedEngine:
    """A second dockerd of our own (own socket, data root, exec root, bridge; no iptables):
    restarting it touches nobody else's containers on this shared machine."""

    def __init__(self, root: Path, bridge: str) -> None:
        self.root = root
        self.bridge = bridge
        self.sock = f"unix://{root}/d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["dockerd", "--data-root", f"{self.root}/data", "--exec-root", f"{self.root}/x"]
        cmd += ["--pidfile", f"{self.root}/d.pid", "--host", self.sock, "--bridge", self.bridge]
        cmd += ["--iptables=false", "--ip-masq=false", "--ip6tables=false"]
        cmd += ["--shutdown-timeout=2"]
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.client().ping()

    def client(self) -> docker.DockerClient:
        @retry(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True)
        def connect() -> docker.DockerClient:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            return docker.DockerClient(base_url=self.sock, timeout=60)

        return connect()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def isolated_engine():
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("ip"):
        pytest.skip("a second dockerd needs root, dockerd and ip")
    main = docker.from_env()
    root = Path(tempfile.mkdtemp(prefix="kd-engine-", dir="/tmp"))  # short: socket paths
    bridge = f"kd{uuid.uuid4().hex[:8]}"
    subnet = f"10.213.{int(bridge[2:4], 16)}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    engine = IsolatedEngine(root, bridge)
    try:
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        engine.start()
        client = engine.client()
        # queue-proxy and a small base (pause and app) from the machine's engine; the base
        # is built here if this machine never built it (a cached kube-apiserver skips it)
        ensure_runtime_base(main, progress=lambda line: None)
        for image in (QUEUE_PROXY, SMALL_BASE):
            client.images.load(main.images.get(image).save(named=True))
        binary = main.containers.create(APP_WITH_BINARY)
        try:
            archive = b"".join(binary.get_archive("/usr/local/bin/app")[0])
        finally:
            binary.remove(force=True)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            dockerfile = (
                f'FROM {SMALL_BASE}\nCOPY app /usr/local/bin/app\nCMD ["/usr/local/bin/app"]\n'
            )
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile.encode()))
            with tarfile.open(fileobj=io.BytesIO(archive)) as src:
                member = src.getmember("app")
                tar.addfile(member, src.extractfile(member))
        context.seek(0)
        client.images.build(fileobj=context, custom_context=True, tag=SMALL_APP, rm=True)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            for container in engine.client().containers.list(all=True):
                container.remove(force=True)
        engine.stop()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)


QUEUE_PROXY = "knative-drain/queue-proxy:1.14.2"
SMALL_BASE = RUNTIME_BASE
APP_WITH_BINARY = "knative-drain/app:go-shutdown"
SMALL_APP = "knative-drain-test/go-shutdown:small"


def test_dockerd_restarted_mid_case_is_an_infrastructure_error(isolated_engine):
    client = isolated_engine.client()
    pod = LocalPod(
        client,
        app_image=SMALL_APP,
        queue_proxy_image=QUEUE_PROXY,
        pause_image=SMALL_BASE,
        revision=RevisionSpec(timeout_seconds=60),
        run_id=f"test-{uuid.uuid4().hex[:6]}",
    )
    with pod:
        with urllib.request.urlopen(pod.url + "/?sleep=0", timeout=10) as answer:
            assert answer.read().startswith(b"slept 0 ms on ")
        isolated_engine.restart()  # dockerd stops the pod's containers and comes back
        pod.delete()
        with pytest.raises(InfrastructureError, match="Docker engine"):
            pod.wait_gone()
    assert isolated_engine.client().containers.list(all=True) == []  # removed after the restart
