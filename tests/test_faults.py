"""Faults under a running case are infrastructure errors, never drain verdicts.

Someone else removes one of the pod's containers (real ``docker rm -f`` on the real pod):
the pod says so from ``wait_gone`` at once, the case ends as "infrastructure: ...", the
drain report lists it without a verdict, and the run goes on to the next case. A dockerd
restart is detected the same way (the engine's event stream ends, calls fail to connect)
but is not exercised here: it would stop every other container on this shared engine.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import uuid

import docker
import pytest

from pytest_knative_drain import catalog
from pytest_knative_drain.platforms.local import LABEL, LocalPlatform
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
            "-k",
            "pod_delete_short and (gunicorn_exec or go_shutdown or default_timeout or go_exit)",
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
