"""The cluster pod target against a real kube-apiserver (no kubelet, no Knative controllers).

What the API server alone decides is asserted as it is: a Knative Service nobody reconciles
never becomes Ready; deleting a pod bound to a node with a grace period only sets
deletionTimestamp (verified here: the object stays, since no kubelet confirms the end);
grace 0 removes the object at once; an unbound pod is removed at once whatever the grace.
Where a test needs what Knative's controller or kubelet would write (the Service's Ready
condition, a pod bound to a node and Ready), it writes exactly that through the status
subresources, the way those components do, and says so.
"""

from __future__ import annotations

import copy
import socket
import threading
import time

import pytest
import test_cluster_apiserver as base
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import retry, stop_after_delay, wait_fixed

from pytest_knative_drain.platforms.cluster import faults as cluster_faults
from pytest_knative_drain.platforms.cluster.api import ClusterError
from pytest_knative_drain.platforms.cluster.changes import Namespaces
from pytest_knative_drain.platforms.cluster.knative_pod import KnativePod
from pytest_knative_drain.platforms.cluster.ksvc import KsvcSpec
from pytest_knative_drain.platforms.cluster.pod_logs import LogFollower
from pytest_knative_drain.platforms.cluster.pod_watch import pod_changes
from pytest_knative_drain.platforms.pod import InfrastructureError

# The API server, its client and Knative 1.14.2's CRDs: the same session fixtures.
kube, api, serving_src, caching_src, knative_core = (
    base.kube, base.api, base.serving_src, base.caching_src, base.knative_core
)  # fmt: skip

SPEC = KsvcSpec(name="sleeper", image="dev.local/sleeper:1", timeout_seconds=30)


NODE = "node-a"


def _ready_node(api: k8s.ApiClient, name: str, ready: str = "True", reason: str = "") -> None:
    """The Node as its kubelet registers it (Ready), or as the node lifecycle controller
    marks it when the kubelet stops posting status (Unknown)."""
    core = k8s.CoreV1Api(api)
    try:
        core.create_node({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    condition = {
        "type": "Ready",
        "status": ready,
        "reason": reason or "KubeletReady",
        "message": "Kubelet stopped posting node status." if reason else "ok",
    }
    core.patch_node_status(name, {"status": {"conditions": [condition]}})


def _play_knative_and_kubelet(api: k8s.ApiClient, target: KnativePod, errors: list) -> None:
    """Write what Knative's controller and kubelet would: ksvc Ready, one Ready pod."""
    try:
        core = k8s.CoreV1Api(api)

        @retry(stop=stop_after_delay(20), wait=wait_fixed(0.2), reraise=True)
        def ksvc_exists() -> None:
            assert target.namespace is not None
            k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                "serving.knative.dev", "v1", target.namespace, "services", SPEC.name
            )

        ksvc_exists()
        _ready_node(api, NODE)
        ns = target.namespace
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        pod = {
            "metadata": {"name": "sleeper-00001-deployment-abc", "labels": {
                "serving.knative.dev/service": SPEC.name}},
            "spec": {
                "nodeName": NODE,  # bound: deletion then waits for a kubelet
                "terminationGracePeriodSeconds": SPEC.timeout_seconds,
                "containers": [
                    {"name": "user-container", "image": SPEC.image},
                    {"name": "queue-proxy", "image": "queue"},
                ],
            },
        }  # fmt: skip
        core.create_namespaced_pod(ns, pod)
        time.sleep(0.3)
        running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        core.patch_namespaced_pod_status(
            pod["metadata"]["name"],
            ns,
            {
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": c, "image": "i", "imageID": "", "ready": True,
                         "restartCount": 0, "state": running}
                        for c in ("queue-proxy", "user-container")
                    ],
                }
            },
        )  # fmt: skip
        k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "serving.knative.dev",
            "v1",
            ns,
            "services",
            SPEC.name,
            {
                "status": {
                    "url": f"http://{SPEC.name}.{ns}.example.com",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
        )
    except Exception as exc:  # noqa: BLE001 - surfaced by the test
        errors.append(exc)


def test_unreconciled_ksvc_times_out_naming_the_condition(knative_core, api) -> None:
    namespaces = Namespaces(api, "run-pod")
    target = KnativePod(
        api, SPEC, namespaces=namespaces, ingress_url="http://127.0.0.1:31080", ready_timeout_s=2
    )
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"Ready: not ready after 2 s") as err, target:
        pass
    assert time.monotonic() - started < 20
    assert "no Ready condition yet (is the Knative controller running?)" in str(err.value)
    # Cleanup ran: the namespace is being deleted and the watch thread ended.
    ns = k8s.CoreV1Api(api).read_namespace(target.namespace)
    assert ns.metadata.deletion_timestamp is not None
    assert not target._watch._thread.is_alive()


def test_pod_target_timeline_delete_grace_and_wait_gone(knative_core, api) -> None:
    namespaces = Namespaces(api, "run-pod")
    core = k8s.CoreV1Api(api)
    target = KnativePod(
        api, SPEC, namespaces=namespaces, ingress_url="http://127.0.0.1:31080", ready_timeout_s=30
    )
    errors: list = []
    helper = threading.Thread(target=_play_knative_and_kubelet, args=(api, target, errors))
    helper.start()
    with target:
        helper.join(30)
        assert not errors
        assert target.name == "sleeper-00001-deployment-abc"
        assert target.url == "http://127.0.0.1:31080"
        assert target.headers == {"Host": f"sleeper.{target.namespace}.example.com"}

        term = target.delete(grace_s=30)
        assert term.grace_s == 30
        # The API server sets deletionTimestamp; with no kubelet the pod object stays.
        started = time.monotonic()
        with pytest.raises(ClusterError, match=r"still exists 1 s after the trigger \(grace 30 s"):
            target.wait_gone(1)
        assert 0.9 < time.monotonic() - started < 5
        live = core.read_namespaced_pod(target.name, target.namespace)
        assert live.metadata.deletion_grace_period_seconds == 30

        # kubelet would report the SIGKILLed container, then confirm with grace 0.
        core.patch_namespaced_pod_status(
            target.name,
            target.namespace,
            {"status": {"containerStatuses": [
                {"name": "user-container", "image": "i", "imageID": "", "ready": False,
                 "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "Error"}}},
                {"name": "queue-proxy", "image": "i", "imageID": "", "ready": False,
                 "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                                                             "reason": "Completed"}}},
            ]}},
        )  # fmt: skip
        target.delete(grace_s=0)
        term = target.wait_gone(10)
        assert term.gone_after_s is not None and 0 <= term.gone_after_s < 10
        assert term.killed == ["user-container"]
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_pod(target.name, target.namespace)
        assert gone.value.status == 404
        names = [e.name for e in target.events if e.pod == target.name]
    for expected in (
        "observed",
        "ready",
        "queue-proxy running",
        "user-container running",
        "delete",
        "deletionTimestamp set",
        "user-container exited",
        "queue-proxy exited",
        "gone",
    ):
        assert expected in names, (expected, names)
    assert names.index("deletionTimestamp set") < names.index("user-container exited")
    assert names.index("user-container exited") < names.index("gone")
    killed = next(e for e in target.events if e.name == "user-container exited")
    assert killed.detail.startswith("exit code 137 (Error) after SIGKILL"), killed.detail
    mono = [e.mono for e in target.events]
    assert mono == sorted(mono)
    assert "events" in target.logs and "(no log" in target.logs["user-container"]
    # Followers were started when the pod was picked and all ended with the case; with no
    # kubelet the API server cannot serve logs, and the record says so instead of failing.
    assert set(target.followers) == {"queue-proxy", "user-container"}
    assert not any(f.alive for f in target.followers.values())
    for container in ("queue-proxy", "user-container"):
        assert "(no log: follower: log API answered" in target.logs[container], target.logs


def test_unbound_pod_is_removed_at_once_whatever_the_grace(api) -> None:
    """An API-server fact the timeline relies on: no node, no graceful deletion."""
    core = k8s.CoreV1Api(api)
    with Namespaces(api, "run-pod").scoped("unbound") as ns:
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        core.create_namespaced_pod(ns, pod)
        core.delete_namespaced_pod("p", ns, grace_period_seconds=30)
        with pytest.raises(ApiException) as gone:
            core.read_namespaced_pod("p", ns)
        assert gone.value.status == 404


def test_pod_changes_reports_only_what_changed() -> None:
    meta = k8s.V1ObjectMeta(name="p")
    old = k8s.V1Pod(metadata=meta, status=k8s.V1PodStatus(phase="Running"))
    assert pod_changes(old, old, "MODIFIED") == []
    assert pod_changes(old, old, "DELETED")[0][0] == "gone"
    new = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p", deletion_grace_period_seconds=0, deletion_timestamp=1),
        status=k8s.V1PodStatus(phase="Failed"),
    )
    names = [n for n, _ in pod_changes(old, new, "MODIFIED")]
    assert names == ["phase Failed", "deletionTimestamp set"]


def _with_user_container(count: int, state: k8s.V1ContainerState, last: bool) -> k8s.V1Pod:
    import datetime as dt

    ended = k8s.V1ContainerStateTerminated(
        exit_code=0, reason="Completed", finished_at=dt.datetime(2026, 12, 8, 1, 2, 3)
    )
    status = k8s.V1ContainerStatus(
        name="user-container",
        image="i",
        image_id="",
        ready=False,
        restart_count=count,
        state=state,
        last_state=k8s.V1ContainerState(terminated=ended if last else None),
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p"),
        status=k8s.V1PodStatus(phase="Running", container_statuses=[status]),
    )


def test_a_restarted_container_reads_as_on_the_local_platform() -> None:
    """kubelet's restart (a failed liveness probe) as the watch may see it: the old and the
    new instance in one observation, or the old one's end first, or a back-off between:
    each time one exit (at its finishedAt) and one start, as the local platform writes."""
    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    ended = k8s.V1ContainerState(
        terminated=k8s.V1ContainerStateTerminated(exit_code=0, reason="Completed")
    )
    waiting = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="CrashLoopBackOff"))
    before = _with_user_container(0, running, last=False)
    at_once = pod_changes(before, _with_user_container(1, running, last=True), "MODIFIED")
    assert at_once == [
        ("user-container exited", "exit code 0 (Completed), finishedAt 01:02:03"),
        ("started user-container", "restartCount 1"),
    ]
    seen_ended = _with_user_container(0, ended, last=False)
    assert [n for n, _ in pod_changes(before, seen_ended, "MODIFIED")] == ["user-container exited"]
    then = pod_changes(seen_ended, _with_user_container(1, running, last=True), "MODIFIED")
    assert then == [("started user-container", "restartCount 1")]
    backing_off = _with_user_container(1, waiting, last=True)
    names = [n for n, _ in pod_changes(before, backing_off, "MODIFIED")]
    assert names == ["user-container exited", "user-container waiting"]
    back = pod_changes(backing_off, _with_user_container(1, running, last=True), "MODIFIED")
    assert back == [("started user-container", "restartCount 1")]
    # kind, 1.10.4, go-exit: the new start reported before lastState says how the old ended
    started = _with_user_container(1, running, last=False)
    assert pod_changes(before, started, "MODIFIED") == [
        ("started user-container", "restartCount 1")
    ]
    later = pod_changes(started, _with_user_container(1, running, last=True), "MODIFIED")
    assert later == [("user-container exited", "exit code 0 (Completed), finishedAt 01:02:03")]


def test_a_pod_deleted_before_its_containers_ran_was_not_sigkilled() -> None:
    """kind, Knative 1.10.4, rollout-long, go-shutdown (2026-12-08): the old revision's
    Deployment made and deleted pods while the rollout went on; two were deleted while
    Pending and kubelet reported their containers 137 (ContainerStatusUnknown). The run read
    that as a SIGKILL at the end of the grace period and failed a drain-clean app that kept
    all 50 requests. Only a kill at the end of a grace period counts."""
    import evidence_reports

    from pytest_knative_drain.platforms.cluster.pod_watch import sigkilled

    report = "2026-12-08-kind-matrix/1.10/kind/drain-report.json"
    entry = evidence_reports.case(report, "rollout-long", "default", "go-shutdown")
    exits = [e for e in evidence_reports.events(entry) if e.name.endswith(" exited")]
    unknown = [e for e in exits if "(ContainerStatusUnknown)" in e.detail]
    assert len(unknown) == 4 and entry["summary"]["ok"] == entry["summary"]["planned"] == 50
    assert [e for e in exits if sigkilled(e.detail)] == []
    assert sigkilled("exit code 137 (Error) after SIGKILL, finishedAt 01:02:03")
    assert not sigkilled("exit code 137 (OOMKilled), finishedAt 01:02:03")
    assert not sigkilled("exit code 0 (Completed), finishedAt 01:02:03")


# -- log followers ------------------------------------------------------------------------
# A kube-apiserver with no kubelet cannot serve a container log (it proxies log reads to
# the node's kubelet), so a stream that delivers lines is not exercised here: these tests
# check what can be checked, that a follower ends by itself, never raises into the case,
# says why it has no log, and that the pod target ends every follower it started.
def _client(url: str) -> k8s.ApiClient:
    config = k8s.Configuration()
    config.host = url
    config.verify_ssl = False
    return k8s.ApiClient(config)


def test_log_follower_of_an_unreachable_server_ends_and_says_why() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    api = _client(f"https://127.0.0.1:{port}")
    follower = LogFollower(k8s.CoreV1Api(api), "ns", "pod-a", "queue-proxy").start()
    follower._thread.join(10)
    assert not follower.alive
    assert follower.text == ""
    assert "refused" in follower.note.lower(), follower.note
    follower.stop()  # idempotent after the end
    api.close()


def test_log_follower_stop_is_bounded_while_the_server_never_answers() -> None:
    with socket.socket() as silent:  # listens, never accepts: the TLS handshake hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        api = _client(f"https://127.0.0.1:{silent.getsockname()[1]}")
        follower = LogFollower(
            k8s.CoreV1Api(api), "ns", "pod-a", "user-container", connect_timeout_s=0.5
        ).start()
        time.sleep(0.2)
        started = time.monotonic()
        follower.stop(timeout_s=10)
        assert not follower.alive and time.monotonic() - started < 10
        assert follower.note == "stopped when the case ended"
        api.close()


def test_a_node_gone_not_ready_ends_the_wait_as_an_infrastructure_error(knative_core, api) -> None:
    """The node's kubelet stopped (node lifecycle: Ready=Unknown): the pod can never be
    confirmed gone, and the requests it held say nothing of draining. The wait ends within
    a poll, not at its bound, as an infrastructure error naming the node."""
    namespaces = Namespaces(api, "run-pod")
    target = KnativePod(
        api, SPEC, namespaces=namespaces, ingress_url="http://127.0.0.1:31080", ready_timeout_s=30
    )
    errors: list = []
    helper = threading.Thread(target=_play_knative_and_kubelet, args=(api, target, errors))
    helper.start()
    try:
        with target:
            helper.join(30)
            assert not errors
            assert target.nodes == {NODE}
            target.delete(grace_s=30)
            _ready_node(api, NODE, "Unknown", "NodeStatusUnknown")
            started = time.monotonic()
            with pytest.raises(InfrastructureError) as fault:
                target.wait_gone(60)
            assert time.monotonic() - started < 10
    finally:
        _ready_node(api, NODE)  # the other tests' pods run there
    assert str(fault.value) == (
        f"node {NODE} of pod {target.name} is not Ready: Ready=Unknown NodeStatusUnknown: "
        "Kubelet stopped posting node status.; no verdict"
    )
    assert "infrastructure fault" in [e.name for e in target.events]


def test_an_api_server_gone_ends_the_wait_as_an_infrastructure_error(
    knative_core, api, monkeypatch
) -> None:
    """The API server stops answering mid-wait (port 1: nobody listens there, for real): a
    call or two may fail, but API_UNREACHABLE_S without an answer ends the case."""
    monkeypatch.setattr(cluster_faults, "API_UNREACHABLE_S", 3.0)
    own = k8s.ApiClient(copy.deepcopy(api.configuration))  # the shared client stays good
    # the kubeconfig loader's hook re-reads the kubeconfig (and its server) before each call
    own.configuration.refresh_api_key_hook = None
    namespaces = Namespaces(own, "run-pod")
    target = KnativePod(
        own, SPEC, namespaces=namespaces, ingress_url="http://127.0.0.1:31080", ready_timeout_s=30
    )
    errors: list = []
    helper = threading.Thread(target=_play_knative_and_kubelet, args=(api, target, errors))
    helper.start()
    with target:
        helper.join(30)
        assert not errors
        target.delete(grace_s=30)
        dead = "https://127.0.0.1:1"  # tcpmux: nothing listens on port 1 here
        live, own.configuration.host = own.configuration.host, dead
        started = time.monotonic()
        with pytest.raises(InfrastructureError) as fault:
            target.wait_gone(60)
        took = time.monotonic() - started
        own.configuration.host = live  # the namespace is removed through it
    assert 3 <= took < 20, took
    message = str(fault.value)
    assert message.startswith(f"read node {NODE}: cannot reach the API server {dead}: "), message
    assert message.endswith("; no verdict"), message
