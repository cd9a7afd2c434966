"""Termination scenarios and the expected outcome per fixture app, as data.

Durations are chosen against queue-proxy's fixed 30 s drain quiet period
(``drainSleepDuration``): the user container gets SIGTERM only when the
preStop ``/wait-for-drain`` returns, 30 s after the last new request. A
scenario is "long" when its requests are still in flight at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DRAIN_QUIET_S = 30.0  # pkg/queue/sharedmain/main.go drainSleepDuration


#: What a batch sends: "http" GET /?sleep (one answer after sleep_s), "stream" GET /stream
#: (a chunked answer that ends after sleep_s, a line every interval_s), "websocket" GET /ws
#: (a session echoing one message every interval_s, held open by the client for at most
#: sleep_s: the app must close it), "grpc-unary" a gRPC Sleep call answered after sleep_s,
#: "grpc-stream" a server-streaming gRPC call, a message a second for sleep_s, then its
#: final message (both over h2c: the revision's port is named h2c, the app serves gRPC).
BATCH_KINDS = ("http", "stream", "websocket", "grpc-unary", "grpc-stream")
GRPC_KINDS = frozenset({"grpc-unary", "grpc-stream"})


@dataclass(frozen=True)
class BatchSpec:
    name: str
    requests: int
    at_s: float  # offset from schedule start
    sleep_s: float  # how long the app holds each request (stream: its length; websocket: hold)
    kind: str = "http"
    interval_s: float = 1.0  # stream: between lines; websocket: between messages
    # websocket: the client ends each session at sleep_s as planned (the app is not the one
    # terminating); else the app must close it first
    client_closes: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BATCH_KINDS:
            raise ValueError(f"BatchSpec kind: one of {', '.join(BATCH_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class ScenarioPlan:
    """One scenario at one profile: load shape, trigger time and pass criteria."""

    batches: tuple[BatchSpec, ...]
    trigger_at_s: float
    timeout_seconds: int  # the revision's timeoutSeconds = pod grace period
    min_strict_sli: float = 1.0
    max_gone_s: float | None = None  # deletion must finish by then (timeliness)
    # When the platform picks which pods end: a request of this batch must have been on
    # one of them (failed, or answered by it), else the run proved nothing.
    cut_batch: str | None = None

    @property
    def planned(self) -> int:
        return sum(b.requests for b in self.batches)

    @property
    def last_request_end_s(self) -> float:
        return max(b.at_s + b.sleep_s for b in self.batches)


ALL_PLATFORMS = ("local", "kind", "existing")
CLUSTER = ("kind", "existing")


@dataclass(frozen=True)
class Trigger:
    """What ends a pod's life in a scenario; cluster-only ones need Knative's controllers."""

    name: str
    family: str  # the conformance module it belongs to (test_<family>.py)
    summary: str
    platforms: tuple[str, ...] = CLUSTER
    grace_s: int | None = None  # deletion grace period; None: the pod's own


TRIGGERS: dict[str, Trigger] = {
    t.name: t
    for t in (
        Trigger(
            "pod-delete",
            "pod_delete",
            "delete the revision pod (its own grace period = timeoutSeconds)",
            ALL_PLATFORMS,
        ),
        Trigger(
            "container-restart",
            "container_restart",
            "restart the user container as kubelet does after a failed liveness probe: its "
            "preStop, SIGTERM, SIGKILL at the end of the grace period, a new container; "
            "queue-proxy stays and gets no signal (on a cluster: the app is asked to fail its "
            "liveness probe, and kubelet's own probe restarts it)",
            ALL_PLATFORMS,
        ),
        Trigger(
            "pod-kill",
            "pod_delete",
            "delete the revision pod with grace period 0 (kubectl delete --grace-period=0 "
            "--force): its containers get no time at all",
            grace_s=0,
        ),
        Trigger(
            "scale-down",
            "scale_down",
            "lower min/max-scale from 2 to 1 on the revision's PodAutoscaler: the "
            "autoscaler removes a pod that holds requests",
        ),
        Trigger(
            "autoscale-down",
            "scale_down",
            "end a burst of short requests: the autoscaler scales down on its own while "
            "long requests are still in flight",
        ),
        Trigger(
            "rollout",
            "rollout",
            "change the Service's template: a new revision takes the traffic; the old "
            "revision, now unreachable, loses its min-scale and is scaled from 2 pods to "
            "what its in-flight requests need (1), ending a pod that holds requests",
        ),
        Trigger(
            "activator-delete",
            "activator",
            "delete one activator pod (its own grace period) while it proxies requests",
        ),
        Trigger(
            "activator-kill",
            "activator",
            "delete one activator pod with grace period 0 (upstream TestActivatorHANonGraceful)",
            grace_s=0,
        ),
        Trigger(
            "node-drain",
            "node_drain",
            "cordon the revision pod's node and evict the test namespace's pods on it "
            "through the Eviction API (kubectl drain's way, scoped to the test: Knative's "
            "and Kourier's own pods keep their PodDisruptionBudgets)",
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    """A load shape per profile, a trigger, and the Knative Service shape it needs."""

    name: str
    summary: str
    plans: dict[str, ScenarioPlan]  # profile -> plan
    trigger: str = "pod-delete"
    scale: int = 1  # revision pods before the trigger (min-scale = max-scale)
    max_scale: int | None = None  # else max-scale = scale; above it the autoscaler decides
    annotations: dict[str, str] = field(default_factory=dict)  # more revision annotations
    target_burst_capacity: int | None = None  # -1: activator always in the request path
    activator_replicas: int = 0  # at least this many activator pods (activator triggers)
    workers: int = 0  # kind worker nodes it needs (node drain: somewhere for pods to go)
    container_concurrency: int = 0  # the revision's containerConcurrency (0: no limit)
    # a liveness probe on the user container, which the trigger makes fail (on a cluster)
    liveness_probe: bool = False
    # narrower than the trigger's platforms until it has run elsewhere, and why
    only_on: tuple[str, ...] = ()
    only_on_why: str = ""

    @property
    def family(self) -> str:
        return TRIGGERS[self.trigger].family

    @property
    def platforms(self) -> tuple[str, ...]:
        on = TRIGGERS[self.trigger].platforms
        return tuple(p for p in on if p in self.only_on) if self.only_on else on

    def plan(self, profile: str) -> ScenarioPlan:
        return self.plans[profile]

    def served_until_s(self, profile: str) -> float:
        """When the last request ends if none is cut: with containerConcurrency the requests
        are served that many at a time (6 x 20 s one at a time: at 120 s)."""
        plan = self.plan(profile)
        if not self.container_concurrency:
            return plan.last_request_end_s
        rounds = -(-plan.planned // self.container_concurrency)
        return rounds * max(b.sleep_s for b in plan.batches)

    @property
    def protocol(self) -> str:
        """The revision port's protocol, as Knative names the port: "h2c" (gRPC) or "http1"."""
        kinds = {b.kind for plan in self.plans.values() for b in plan.batches}
        return "h2c" if kinds & GRPC_KINDS else "http1"


def _one(n: int, sleep_s: float) -> tuple[BatchSpec, ...]:
    return (BatchSpec("batch-1", n, 0.0, sleep_s),)


def _two(n: int, sleep_s: float, second_at_s: float) -> tuple[BatchSpec, ...]:
    return (BatchSpec("batch-1", n, 0.0, sleep_s), BatchSpec("batch-2", n, second_at_s, sleep_s))


def _stream(total: int, *, every_s: float, batches: int, sleep_s: float) -> tuple[BatchSpec, ...]:
    """``total`` short requests in ``batches`` equal batches, one every ``every_s``."""
    each = total // batches
    return tuple(BatchSpec(f"batch-{i + 1}", each, i * every_s, sleep_s) for i in range(batches))


# The long-request load every cluster trigger family shares (pod-delete-long's shape).
_LONG = {
    "quick": ScenarioPlan(_one(50, 75), trigger_at_s=5, timeout_seconds=120),
    "seed": ScenarioPlan(_one(200, 300), trigger_at_s=10, timeout_seconds=600),
}

# A steady stream of short requests for the non-graceful kills, held to upstream's 0.90
# (test/ha/activator_test.go: >= 400 probes, SLO 0.90 when the pod gets grace 0).
# Requests overlap (3 s each, a batch every second) so some are always in flight, and the
# kill lands between batch starts: the first real run (2026-12-01) sent 1 s requests every
# 2 s with the kill on a batch boundary, so nothing was in flight when the pod died and no
# app or configuration could fail there.
_STREAM = {
    "quick": ScenarioPlan(
        _stream(400, every_s=1.0, batches=40, sleep_s=3.0),
        trigger_at_s=10.5,
        timeout_seconds=120,
        min_strict_sli=0.90,
    ),
    "seed": ScenarioPlan(
        _stream(2000, every_s=1.0, batches=100, sleep_s=3.0),
        trigger_at_s=60.5,
        timeout_seconds=300,
        min_strict_sli=0.90,
    ),
}

# Long-lived connections (issue 10 part 2). Streams end at 75 s: after the app's SIGTERM
# (~32 s) and after gunicorn's default graceful timeout (~62 s), like pod-delete-long.
# Websocket sessions are opened before the trigger and held by the client up to 150 s: a
# draining app closes them with 1000 a few seconds after its SIGTERM; one that does not
# is cut by SIGKILL at the end of the 120 s grace period first.
_STREAMS = {
    "quick": ScenarioPlan(
        (BatchSpec("streams", 20, 0.0, 75, kind="stream"),), trigger_at_s=2, timeout_seconds=120
    ),
    "seed": ScenarioPlan(
        (BatchSpec("streams", 200, 0.0, 300, kind="stream"),), trigger_at_s=10, timeout_seconds=600
    ),
}
_WEBSOCKETS = {
    "quick": ScenarioPlan(
        (BatchSpec("sessions", 20, 0.0, 150, kind="websocket"),),
        trigger_at_s=2,
        timeout_seconds=120,
    ),
    "seed": ScenarioPlan(
        (BatchSpec("sessions", 200, 0.0, 660, kind="websocket"),),
        trigger_at_s=10,
        timeout_seconds=600,
    ),
}

# gRPC over h2c (issue 20): unary calls as long as pod-delete-long's requests, and
# server-streaming calls (a message a second) as long as streaming-long's streams.
_GRPC_UNARY = {
    "quick": ScenarioPlan(
        (BatchSpec("calls", 50, 0.0, 75, kind="grpc-unary"),), trigger_at_s=2, timeout_seconds=120
    ),
    "seed": ScenarioPlan(
        (BatchSpec("calls", 200, 0.0, 300, kind="grpc-unary"),),
        trigger_at_s=10,
        timeout_seconds=600,
    ),
}
_GRPC_STREAMS = {
    "quick": ScenarioPlan(
        (BatchSpec("streams", 20, 0.0, 75, kind="grpc-stream"),),
        trigger_at_s=2,
        timeout_seconds=120,
    ),
    "seed": ScenarioPlan(
        (BatchSpec("streams", 200, 0.0, 300, kind="grpc-stream"),),
        trigger_at_s=10,
        timeout_seconds=600,
    ),
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "pod-delete-short",
            "pod deleted with requests that end inside the 30 s quiet period",
            {
                "quick": ScenarioPlan(_one(50, 10), trigger_at_s=2, timeout_seconds=120),
                "seed": ScenarioPlan(_one(200, 20), trigger_at_s=2, timeout_seconds=300),
            },
        ),
        Scenario(
            "pod-delete-long",
            "pod deleted with requests that outlive the 30 s quiet period "
            "(no upstream test covers this)",
            {
                # SIGTERM reaches the app ~32 s in; gunicorn's default 30 s graceful
                # timeout ends ~62 s; 75 s requests outlive both.
                "quick": ScenarioPlan(_one(50, 75), trigger_at_s=2, timeout_seconds=120),
                "seed": ScenarioPlan(_one(200, 300), trigger_at_s=10, timeout_seconds=600),
            },
        ),
        Scenario(
            "second-batch-during-termination",
            "knative/serving#15211: a second batch reaches the pod while it terminates",
            {
                # batch-2 at 10 s restarts the quiet period: app SIGTERM ~40 s, ends 85 s.
                "quick": ScenarioPlan(_two(50, 75, 10), trigger_at_s=5, timeout_seconds=120),
                "seed": ScenarioPlan(_two(200, 300, 90), trigger_at_s=60, timeout_seconds=600),
            },
        ),
        Scenario(
            "streaming-long",
            "pod deleted with chunked streams (a line a second) whose end comes after the "
            "app's SIGTERM: every body must be complete and terminated",
            _STREAMS,
        ),
        Scenario(
            "websocket-long",
            "pod deleted with websocket sessions opened before, one message echoed a second: "
            "every message answered and every session closed 1000 by the app",
            _WEBSOCKETS,
        ),
        Scenario(
            "grpc-unary-long",
            "pod deleted with gRPC unary calls over h2c that outlive the 30 s quiet period: "
            "every call answered with status OK",
            _GRPC_UNARY,
        ),
        Scenario(
            "grpc-stream-long",
            "pod deleted with server-streaming gRPC calls over h2c (a message a second) whose "
            "end comes after the app's SIGTERM: every call ends OK with its final message",
            _GRPC_STREAMS,
        ),
        Scenario(
            "queued-during-termination",
            "containerConcurrency 1: 6 x 20 s requests, one served at a time, the rest waiting "
            "in queue-proxy's queue (depth 10) when the pod is deleted at 2 s: every request "
            "served, the queued ones too",
            {
                # served one after another: 0-20, 20-40 ... 100-120 s; the app's SIGTERM
                # comes at ~32 s with 4 requests still queued in queue-proxy
                "quick": ScenarioPlan(_one(6, 20), trigger_at_s=2, timeout_seconds=180),
                "seed": ScenarioPlan(_one(10, 60), trigger_at_s=10, timeout_seconds=900),
            },
            container_concurrency=1,
            only_on=("local",),
            only_on_why=(
                "not run on a cluster yet: with containerConcurrency 1 the activator stays in "
                "the path there and may hold the queue instead of queue-proxy, so the local "
                "finding (queued-requests-sent-after-app-sigterm) may not apply"
            ),
        ),
        Scenario(
            "container-restart",
            "the user container is restarted (a failed liveness probe) with 40 s requests in "
            "flight and short ones arriving every second: the in-flight ones complete, the "
            "pod is Ready again in time and serves; queue-proxy's 502 'connection refused' "
            "while no app listens is counted apart (Knative promises nothing there)",
            {
                # the app's SIGTERM ~1 s after the restart (queue-proxy ends the drain when no
                # SIGTERM of its own came); a draining app is down until its 40 s requests
                # end (~40 s in); gunicorn's default 30 s graceful timeout cuts them ~36 s
                # in; a shell-form CMD is SIGKILLed at the 60 s grace, ~66 s in, with short
                # requests in flight; the short requests go on to 70 s
                "quick": ScenarioPlan(
                    (BatchSpec("in-flight", 10, 0.0, 40.0),)
                    + _stream(140, every_s=1.0, batches=70, sleep_s=1.0),
                    trigger_at_s=5,
                    timeout_seconds=60,
                ),
                "seed": ScenarioPlan(
                    (BatchSpec("in-flight", 200, 0.0, 300.0),)
                    + _stream(800, every_s=1.0, batches=400, sleep_s=1.0),
                    trigger_at_s=10,
                    timeout_seconds=600,
                ),
            },
            trigger="container-restart",
            liveness_probe=True,
        ),
        Scenario(
            "deletion-timeliness",
            "a pod whose app handles SIGTERM is gone well before its grace period",
            {
                # upstream destroypod_test TestDestroyPodTimely: gone < timeout - 30 s
                "quick": ScenarioPlan(
                    _one(10, 5), trigger_at_s=1, timeout_seconds=120, max_gone_s=90
                ),
                "seed": ScenarioPlan(
                    _one(10, 5), trigger_at_s=1, timeout_seconds=300, max_gone_s=270
                ),
            },
        ),
        Scenario(
            "scale-down-long",
            "one of two pods is scaled away while both hold requests that outlive the "
            "30 s quiet period",
            _LONG,
            trigger="scale-down",
            scale=2,
        ),
        Scenario(
            "scale-down-after-burst",
            "a burst scales the revision to 3 pods; long requests start on them; when the "
            "burst ends the autoscaler removes pods that hold long requests",
            {
                # 600 x 1 s over 20 s (~30 in flight, target 10: 3 pods), 6 x 100 s at 15 s;
                # window 6 s: 2 pods go ~26 s in, their app gets SIGTERM ~60 s in.
                "quick": ScenarioPlan(
                    _stream(600, every_s=1.0, batches=20, sleep_s=1.0)
                    + (BatchSpec("long", 6, 15.0, 100.0),),
                    trigger_at_s=20,
                    timeout_seconds=150,
                    cut_batch="long",
                ),
                "seed": ScenarioPlan(
                    _stream(2000, every_s=1.0, batches=40, sleep_s=1.0)
                    + (BatchSpec("long", 6, 30.0, 300.0),),  # more would hold the scale up
                    trigger_at_s=40,
                    timeout_seconds=600,
                    cut_batch="long",
                ),
            },
            trigger="autoscale-down",
            scale=1,
            max_scale=3,
            annotations={
                "autoscaling.knative.dev/target": "10",
                "autoscaling.knative.dev/window": "6s",
                "autoscaling.knative.dev/scale-down-delay": "0s",
            },
        ),
        Scenario(
            "rollout-long",
            "a new revision rolls out while the old revision's two pods hold long requests; "
            "the old revision is scaled down to one pod with requests still in flight",
            _LONG,
            trigger="rollout",
            scale=2,
            # An unreachable revision's min-scale no longer applies (knative/serving
            # pkg/apis/autoscaling/v1alpha1 PodAutoscaler.ScaleBounds); with a soft target
            # above any batch the in-flight requests need one pod: 2 -> 1 at once. Without
            # this the autoscaler keeps the old pod until its requests end: nothing to test.
            annotations={
                "autoscaling.knative.dev/target": "1000",
                "autoscaling.knative.dev/target-utilization-percentage": "100",
            },
        ),
        Scenario(
            "node-drain-long",
            "the node of the revision pod is drained while it holds long requests",
            _LONG,
            trigger="node-drain",
            workers=2,
        ),
        Scenario(
            "activator-delete-long",
            "an activator pod is deleted while long requests pass through it "
            "(target-burst-capacity -1 keeps the activator in the path)",
            _LONG,
            trigger="activator-delete",
            target_burst_capacity=-1,
            activator_replicas=2,
        ),
        # the long-lived connections through an activator that is deleted (issue 20, item 4)
        Scenario(
            "activator-delete-streaming",
            "an activator pod is deleted while chunked streams (a line a second, 75 s) pass "
            "through it: every body complete",
            _STREAMS,
            trigger="activator-delete",
            target_burst_capacity=-1,
            activator_replicas=2,
        ),
        Scenario(
            "activator-delete-websocket",
            "an activator pod is deleted while websocket sessions pass through it: every "
            "message answered until the client closes each session at 90 s (inside the "
            "revision's 120 s timeout, which ends a longer one), answered 1000",
            {
                "quick": ScenarioPlan(
                    (BatchSpec("sessions", 20, 0.0, 90, kind="websocket", client_closes=True),),
                    trigger_at_s=2,
                    timeout_seconds=120,
                ),
                "seed": ScenarioPlan(
                    (BatchSpec("sessions", 200, 0.0, 500, kind="websocket", client_closes=True),),
                    trigger_at_s=10,
                    timeout_seconds=600,
                ),
            },
            trigger="activator-delete",
            target_burst_capacity=-1,
            activator_replicas=2,
        ),
        Scenario(
            "activator-delete-grpc-stream",
            "an activator pod is deleted while server-streaming gRPC calls (75 s) pass "
            "through it: every call OK with its final message",
            _GRPC_STREAMS,
            trigger="activator-delete",
            target_burst_capacity=-1,
            activator_replicas=2,
        ),
        Scenario(
            "pod-kill",
            "one of two pods is killed (grace 0) under a steady stream of short requests: "
            "the other must take over; held to 0.90 like upstream's non-graceful kills",
            _STREAM,
            trigger="pod-kill",
            scale=2,
        ),
        Scenario(
            "activator-kill",
            "an activator pod is killed (grace 0) under a steady stream of short requests; "
            "Knative's own tolerance is 0.90",
            _STREAM,
            trigger="activator-kill",
            target_burst_capacity=-1,
            activator_replicas=2,
        ),
    )
}


def resolve_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
