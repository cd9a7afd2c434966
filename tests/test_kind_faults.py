"""Bad images and faults on a real kind cluster with Knative: what issue 12 asks of kind.

These need the cluster ``scripts/kind-e2e`` keeps (``knative-drain``, two workers) and take
minutes, so they run only there (step 3: ``KNATIVE_DRAIN_KIND_FAULTS=1``); everywhere else
they skip saying so. Each runs the conformance plugin in a child pytest on
``--platform=kind --keep-cluster`` (the cluster reused, not made) and checks its output:

- an ``--app-image`` that exits, or answers something else, ends the session once in the
  contract preflight (exit 4), before any case, with the exit code and log tail;
- the API server unreachable mid-case (its port dropped inside the control-plane node, for
  real, for 75 s) ends the case as an infrastructure error, not a verdict, and its
  namespace is still deleted once the API server is back;
- the kind node under the pod stopped (``docker stop``) does the same at once; it is the
  last test: the node is started again, but the cluster is not trusted after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import bad_images
import pytest
from kubernetes import client, config

from pytest_knative_drain.platforms.cluster.api import RUN_LABEL

CLUSTER = os.environ.get("KNATIVE_DRAIN_KIND_CLUSTER", "knative-drain")
VERSION = os.environ.get("KNATIVE_VERSION", "1.14")
CONTROL_PLANE = f"{CLUSTER}-control-plane"
# pytester points HOME at its temp dir: the child needs the real one, where the built kind
# stack is cached (~/.cache/knative-drain) and kind's kubeconfig is (~/.kube/config)
HOME = os.environ.get("HOME", "/root")
DROP_API = ["INPUT", "-p", "tcp", "--dport", "6443", "-j", "DROP"]  # the API server's port
API_DOWN_S = 75  # above the 30 s bound plus an ask that fails slowly (urllib3 retries: 20-40 s)
# pod-delete-long-go-shutdown alone (its config twins would wait on the stopped node too)
ONE_LONG_CASE = "pod_delete_long and go_shutdown and not timeout and not activator and not tls"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KNATIVE_DRAIN_KIND_FAULTS") != "1",
        reason="needs the kind cluster scripts/kind-e2e keeps (it sets KNATIVE_DRAIN_KIND_FAULTS)",
    ),
]

# The child's test module: the conformance test, and a fault thread (FAULT: a shell command
# run on the host FAULT_AFTER_S after the case's pod is Ready).
INNER = """
    import os
    import subprocess
    import threading
    import time

    from kubernetes import client, config

    import pytest

    pytestmark = pytest.mark.drain_family("pod_delete")


    def ready_namespaces(core):
        pods = core.list_pod_for_all_namespaces(label_selector="serving.knative.dev/service")
        return [(p.metadata.namespace, p.spec.node_name) for p in pods.items
                if p.metadata.namespace.startswith("drain-")
                and p.metadata.deletion_timestamp is None  # an earlier run's, going away
                and any(c.type == "Ready" and c.status == "True"
                        for c in (p.status.conditions or []))]


    def fault_when_ready():
        # From collection on: the plugin runs its cases on its own threads from session
        # start. The first pod Ready is the contract preflight's; the next is the case's.
        core = client.CoreV1Api(config.new_client_from_config(context=os.environ["KIND_CONTEXT"]))
        earlier = {namespace for namespace, _ in ready_namespaces(core)}  # not this run's
        preflight = None
        while True:
            try:
                ready = ready_namespaces(core)
            except Exception as exc:  # the API server busy: look again
                print(f"fault thread: {exc}", flush=True)
                ready = []
            for namespace, node in ready:
                if namespace in earlier:
                    continue
                preflight = preflight or namespace
                if namespace != preflight:
                    time.sleep(float(os.environ["FAULT_AFTER_S"]))
                    cmd = os.environ["FAULT"].replace("{node}", node)
                    print(f"FAULT at {time.time():.1f} on {namespace}: {cmd}", flush=True)
                    subprocess.run(cmd, shell=True, check=True)
                    return
            time.sleep(0.5)


    if os.environ.get("FAULT"):
        threading.Thread(target=fault_when_ready, daemon=True).start()


    def test_pod_delete(drain, drain_case):
        drain.check(drain.run(drain_case))
"""

DOCKERFILES = {"exits": bad_images.EXITS, "wrong-body": bad_images.WRONG_BODY}


def _child(pytester, args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    pytester.makepyfile(test_inner=textwrap.dedent(INNER))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-s"]
    cmd += ["--platform=kind", f"--knative-version={VERSION}", "--keep-cluster"]
    proc = subprocess.run(
        cmd + args,
        cwd=pytester.path,
        env={**os.environ, "HOME": HOME, "KIND_CONTEXT": f"kind-{CLUSTER}", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def images():
    with bad_images.built("dev.local/knative-drain-test", DOCKERFILES) as tags:
        try:
            yield tags
        finally:
            for tag in tags.values():
                for node in _docker("ps", "--format", "{{.Names}}").stdout.split():
                    if node.startswith(f"{CLUSTER}-"):  # what kind load put in the node
                        _docker("exec", node, "crictl", "rmi", tag, check=False)


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (
            "exits",
            ("user-container cannot start: exited with code 3", "log tail: the app is going away"),
        ),
        (
            "wrong-body",
            ("through the ingress on http://", "answered 200 '<!DOCTYPE HTML", "not 200 'slept"),
        ),
    ],
)
def test_an_unusable_app_image_ends_the_session_once_on_kind(pytester, images, image, says):
    ref = images[image]
    started = time.monotonic()
    code, text = _child(pytester, [f"--app-image={ref}"], {}, 900)
    took = time.monotonic() - started
    print(f"{image}: exit {code} in {took:.0f} s")
    assert code == 4, text
    lines = [line for line in text.splitlines() if f"--app-image={ref}: " in line]
    assert len(lines) == 1, text  # said once, not once per case
    for part in says:
        assert part in lines[0], lines[0]
    assert "no tests ran" in text, text
    assert "Traceback" not in text, text


def test_the_api_server_unreachable_mid_case_is_an_infrastructure_error(pytester, tmp_path):
    report = tmp_path / "run.json"
    # dropped for API_DOWN_S, then back (an API server restart, a network blip): the case
    # ends without a verdict at 30 s unanswered, and its cleanup gets through once it is back
    drop = " ".join(DROP_API)
    fault = (
        f"docker exec {CONTROL_PLANE} iptables -w -I {drop} && sleep {API_DOWN_S} && "
        f"docker exec {CONTROL_PLANE} iptables -w -D {drop}"
    )
    try:
        code, text = _child(
            pytester,
            ["-k", "pod_delete_short and go_shutdown", f"--drain-report={report}"],
            {"FAULT": fault, "FAULT_AFTER_S": "6"},
            900,
        )
    finally:
        removed = _docker("exec", CONTROL_PLANE, "iptables", "-w", "-D", *DROP_API, check=False)
        while removed.returncode == 0:  # every copy of the rule
            removed = _docker("exec", CONTROL_PLANE, "iptables", "-w", "-D", *DROP_API, check=False)
    print(text[-3000:])
    assert code == 1, text
    assert "FAULT at " in text, text
    assert "infrastructure: pod-delete-short-go-shutdown: " in text, text
    assert "cannot reach the API server" in text and "; no verdict" in text, text
    data = json.loads(report.read_text())
    assert data["verdict"] == "incomplete", data["verdict"]
    assert [e["case"] for e in data["infrastructure_errors"]] == ["pod-delete-short-go-shutdown"]
    assert "left behind" not in text, text
    assert _live_case_namespaces() == [], "the case's namespace was not deleted"


def _live_case_namespaces() -> list[str]:
    """Namespaces a run made (labelled) that are not being deleted."""
    api = config.new_client_from_config(
        config_file=os.path.join(HOME, ".kube", "config"), context=f"kind-{CLUSTER}"
    )
    try:
        spaces = client.CoreV1Api(api).list_namespace(label_selector=RUN_LABEL).items
    finally:
        api.close()
    return [n.metadata.name for n in spaces if n.metadata.deletion_timestamp is None]


def test_the_kind_node_under_the_pod_stopped_is_an_infrastructure_error(pytester, tmp_path):
    report = tmp_path / "run.json"
    nodes_before = _docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    if f"{CLUSTER}-worker" not in nodes_before:  # the pod would be on the control plane
        pytest.skip(f"{CLUSTER} has no worker node (scripts/kind-e2e's selection makes two)")
    try:
        code, text = _child(
            pytester,
            ["-k", ONE_LONG_CASE, f"--drain-report={report}"],
            {"FAULT": "docker stop {node}", "FAULT_AFTER_S": "10"},
            900,
        )
    finally:
        for node in nodes_before:
            if node.startswith(f"{CLUSTER}-"):
                _docker("start", node, check=False)
    print(text[-3000:])
    assert code == 1, text
    assert "FAULT at " in text, text
    assert "infrastructure: pod-delete-long-go-shutdown: " in text, text
    assert f"kind node {CLUSTER}-" in text and "its container is exited" in text, text
    data = json.loads(report.read_text())
    assert data["verdict"] == "incomplete", data["verdict"]
    assert data["scenarios"] == []  # no verdict: the case is not among them
    assert _live_case_namespaces() == [], "the case's namespace was not deleted"
