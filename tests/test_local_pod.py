"""The pod emulation against real containers and the real queue-proxy binary.

Each deletion waits out queue-proxy's real 30 s drain quiet period, so these
tests take about a minute and a half together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from misbehaving_servers import LoopbackServer

from pytest_knative_drain.knative import catalog
from pytest_knative_drain.platforms.local import (
    LABEL,
    QUEUE_ADMIN_PORT,
    LocalPlatform,
    LocalPlatformError,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def platform():
    try:
        p = LocalPlatform.provision(
            catalog.resolve("1.14"),
            apps=["go-shutdown", "python-gunicorn-shell"],
            run_id=f"test-{uuid.uuid4().hex[:6]}",
        )
    except Exception as exc:  # noqa: BLE001 - report why the engine/images are missing
        pytest.skip(f"local platform unavailable: {exc}")
    yield p
    p.close()
    assert _containers(p, p.run_id) == [], "containers left behind"


def _containers(p: LocalPlatform, run_id: str) -> list[str]:
    found = p.client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"})
    return [c.name for c in found]


def _offsets(pod) -> dict[str, float]:
    t0 = pod.termination.t0_mono
    return {e.name: e.mono - t0 for e in pod.events}


def test_kubelet_order_quiet_period_and_request_during_drain(platform):
    with platform.pod("go-shutdown", None, timeout_seconds=60) as pod:
        pod.delete()
        time.sleep(5)
        # A new request during the drain is still proxied and restarts the quiet period.
        with urllib.request.urlopen(pod.url + "/?sleep=1000", timeout=10) as response:
            assert response.status == 200
            assert response.headers["x-pod-name"] == pod.name
        termination = pod.wait_gone()
        at = _offsets(pod)
    assert at["SIGTERM queue-proxy"] < 1.0 and at["preStop started"] < 1.0
    # quiet period: 30 s after the last request (sent at ~5 s, done at ~6 s)
    assert 34.0 <= at["preStop returned"] <= 40.0, at
    assert at["SIGTERM user-container"] >= at["preStop returned"]
    assert termination.killed == []
    assert termination.prestop_status == 200
    assert termination.gone_after_s < at["preStop returned"] + 5


def test_sigkill_when_the_app_ignores_sigterm(platform):
    with platform.pod("python-gunicorn-shell", None, timeout_seconds=35) as pod:
        termination = pod.delete()
        pod.wait_gone()
        at = _offsets(pod)
    assert termination.killed == ["user-container"]
    # preStop ~30 s, then the rest of the 35 s grace (kubelet: at least 2 s)
    assert 34.5 <= at["SIGKILL user-container"] <= 37.5, at
    assert at["queue-proxy exited"] < at["SIGKILL user-container"]


@pytest.mark.parametrize(
    ("behaviour", "event", "status", "detail"),
    [
        ("bad_gateway", "preStop returned", 502, "status 502"),
        ("close", "preStop failed", None, "Remote end closed connection"),
    ],
)
def test_prestop_ends_on_any_status_and_fails_only_on_transport_errors(
    platform, behaviour, event, status, detail
):
    """kubelet runs the preStop GET as plain HTTP and ignores its status: an error status
    ends the hook like 200 does (the status in the pod event), only a transport error fails
    it ('preStop failed'); either way the app gets SIGTERM at once. The GET goes to a real
    server that answers so, instead of queue-proxy's admin port."""
    with (
        LoopbackServer(behaviour) as srv,
        platform.pod("go-shutdown", None, timeout_seconds=6) as pod,
    ):
        pod._ports[QUEUE_ADMIN_PORT] = srv.port
        termination = pod.delete()
        pod.wait_gone()
        at = _offsets(pod)
    assert srv.requests == 1 and srv.heads[0].startswith(b"GET /wait-for-drain HTTP/1.1\r\n")
    ended = [e for e in pod.events if e.name in ("preStop returned", "preStop failed")]
    assert [e.name for e in ended] == [event] and detail in ended[0].detail
    assert termination.prestop_status == status
    assert at["SIGTERM user-container"] - at[event] < 1.0 and at[event] < 2.0, at


def test_pod_that_never_gets_ready_fails_clearly_and_leaves_nothing(platform):
    pod = platform.pod("broken", platform.queue_proxy_image, timeout_seconds=30)
    with pytest.raises(LocalPlatformError, match="exited before the pod became ready"), pod:
        pass
    assert _containers(platform, platform.run_id) == []


def test_ctrl_c_removes_the_pod(tmp_path):
    """SIGINT in the middle of a scenario: pytest unwinds and no container survives."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "conformance"),
            "--platform=local",
            "-k",  # one case: its pod is the second after the preflight's
            "pod_delete_long and go_shutdown and not short_timeout and not internal_tls",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # SIGINT at its default in the run: a CI step in the background inherits it ignored,
        # and an ignored signal stays ignored (pytest_knative_drain.interrupts)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    import docker

    client = docker.from_env()
    deadline = time.monotonic() + 240
    pods: set[str] = set()  # the first is the contract preflight's, the second the case's
    try:
        while time.monotonic() < deadline:
            mine = client.containers.list(filters={"label": f"knative-drain.owner-pid={proc.pid}"})
            pods.update(c.labels["knative-drain.pod"] for c in mine)
            if len(pods) == 2 and len(mine) == 3:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the pod never came up")
        time.sleep(3)  # load running
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = client.containers.list(
        all=True, filters={"label": f"knative-drain.owner-pid={proc.pid}"}
    )
    assert left == [], out
    assert "KeyboardInterrupt" in out or "Interrupted" in out
