"""Knative's own drain bugs, as data: where a drain-clean app is known to fail, and why.

A good app failing on a Knative release is the gate doing its job, so a scenario is never
loosened to let it pass. Instead the failure is recorded here with its upstream issue and
the first fixed releases; the plugin marks such a case ``xfail(strict=True)`` on an
affected release (an unexpected pass means the record is wrong, and the run says so) and
expects a pass everywhere else. Importable without pytest.

Each record was found by reading knative/serving's history at the tags named, and checked
by running the case on an affected and on a fixed release where the module builds here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _upper(bound: str) -> tuple[int, ...]:
    """``"1.18.2"`` is that patch; ``"1.18"`` is every patch of 1.18, also ones tagged later."""
    key = _key(bound)
    return key if len(key) == 3 else (*key, 10**6)


@dataclass(frozen=True)
class KnownFailure:
    """One Knative bug: the cases it breaks for an app that drains cleanly."""

    id: str
    title: str
    scenarios: tuple[str, ...]  # scenario names it breaks
    configs: tuple[str, ...]  # Knative configs under which it breaks them
    # inclusive (first, last) Knative release ranges; a last of "1.18" means every 1.18 patch
    affected: tuple[tuple[str, str], ...]
    fixed_in: tuple[str, ...]  # the first fixed release of each affected line
    issues: tuple[str, ...]  # upstream reports
    fix: str  # the upstream change that fixed it
    signature: str  # the component the diagnosis names for the cut requests
    evidence: str  # what was run here, and how it came out
    apps: tuple[str, ...] = ()  # the must-pass apps it breaks there; empty: every one
    profiles: tuple[str, ...] = ()  # the load profiles it breaks them at; empty: every one

    def affects(self, version: str) -> bool:
        v = _key(version)
        return any(_key(lo) <= v <= _upper(hi) for lo, hi in self.affected)

    def matches(
        self,
        scenario: str,
        config: str,
        version: str,
        app: str | None = None,
        profile: str | None = None,
    ) -> bool:
        return (
            scenario in self.scenarios
            and config in self.configs
            and (not self.apps or app in self.apps)
            and (not self.profiles or profile in self.profiles)
            and self.affects(version)
        )

    @property
    def reason(self) -> str:
        """One line for pytest's xfail reason and the report."""
        fixed = (
            f"fixed by {self.fix} in {', '.join(self.fixed_in)}" if self.fixed_in else "no fix yet"
        )
        return f"known Knative failure {self.id}: {self.title} ({', '.join(self.issues)}; {fixed})"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "issues": list(self.issues),
            "fix": self.fix,
            "fixed_in": list(self.fixed_in),
            "affected": [f"{lo}..{hi}" for lo, hi in self.affected],
            "signature": self.signature,
            **({"apps": list(self.apps)} if self.apps else {}),
            **({"profiles": list(self.profiles)} if self.profiles else {}),
        }


KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        id="queue-proxy-exits-before-in-flight",
        title=(
            "queue-proxy exits 30 s after SIGTERM (or after the last new request, whichever "
            "is later) without shutting down its main server, cutting every request still in "
            "flight while the app drains"
        ),
        # Every scenario whose requests are still in flight 30 s after queue-proxy's
        # SIGTERM; the short ones end before and pass on every release. websocket-long has
        # its own record (cut on every release before 1.22).
        scenarios=("pod-delete-long", "second-batch-during-termination", "streaming-long"),
        # the TLS servers too (1.4-1.9.2); response-start-timeout does not exist before 1.7
        # and on 1.7-1.9.2 the stream is cut here before that bug could hang it
        configs=("default", "internal-tls", "idle-timeout", "response-start-timeout"),
        # knative-v1.1.0 (#12033) moved draining to knative/pkg's Drainer and main returned
        # after Drain() with the main server removed from the shutdown list; knative-v1.0.x
        # still called mainServer.Shutdown. #13815 (fc86653f91, main for 1.10) shuts every
        # server down after Drain(); backported to 1.9.3 (#13829) and 1.8.6 (#13836).
        # pkg/queue/sharedmain/main.go (cmd/queue/main.go before 1.7) at each tag.
        affected=(("1.1.0", "1.8.5"), ("1.9.0", "1.9.2")),
        fixed_in=("1.8.6", "1.9.3", "1.10.0"),
        issues=("knative/serving#13720", "knative/serving#13953"),
        fix="knative/serving#13815",
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-01): 1.7.0 (the pod-delete family) and 1.1.0 cut every "
            "long request of go-shutdown and python-gunicorn-exec at delete+30 s (empty "
            "reply; 0/50, 0/100) while the app still served; 1.0.2 and 1.10.0 pass them. "
            "Other affected patches not run (many refused by the module mirror); 1.8.6 is "
            "refused and 1.9.x does not build here (control-protocol refused)"
        ),
    ),
    KnownFailure(
        id="queue-proxy-cuts-websockets-at-drain",
        title=(
            "queue-proxy exits at the end of its drain with websocket sessions open: "
            "http.Server.Shutdown neither waits for nor closes hijacked connections (and "
            "1.1-1.9.2 never shut the main server down), so every session is cut (1006) while "
            "the app is still closing it with 1000"
        ),
        scenarios=("websocket-long",),
        configs=("default",),
        # pkg/queue/sharedmain/main.go: after Drain() only srv.Shutdown (which ignores
        # hijacked connections), up to knative-v1.21.3; #16362 (ce8ae6c381, knative-v1.22.0)
        # wraps the main handler in a HijackTracker and polls until every in-flight request
        # through it has ended, at most 60 s after Shutdown returns. No 1.21.x tag has
        # pkg/http/handler/hijack.go. Reported in two PRs, no issue: #15759 (open, unmerged),
        # #16080 (closed).
        affected=(("1.0.0", "1.21"),),
        fixed_in=("1.22.0",),
        issues=("knative/serving#15759 (PR)", "knative/serving#16080 (PR)"),
        fix="knative/serving#16362",
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-01): 1.14.2 cut all 20 sessions of go-shutdown and of "
            "python-gunicorn-exec with no close frame at delete+30.1 s, as queue-proxy exited "
            "right after its drain (32 echoes each); 1.23.0: go-shutdown 20/20 closed 1000 by "
            "the app, queue-proxy exited after it (delete+31.1 s). 1.18.1-1.22.x not run"
        ),
    ),
    KnownFailure(
        id="queue-proxy-cuts-grpc-at-drain",
        title=(
            "queue-proxy exits at the end of its drain with gRPC calls in flight: its main "
            "server takes h2c connections through x/net's h2c handler, which hijacks them from "
            "http.Server, and Shutdown neither waits for nor closes hijacked connections, so "
            "every call is cut (no answer, or a stream ended without grpc-status) while the app "
            "still serves it"
        ),
        scenarios=("grpc-unary-long", "grpc-stream-long"),
        configs=("default",),
        # The same mechanism as the websocket record above (knative.dev/pkg network.NewServer
        # wraps the main handler in h2c.NewHandler); #16362 (knative-v1.22.0) counts every
        # request through its HijackTracker, h2c streams included. No upstream report names
        # gRPC or h2c at drain; #13575 and #12006 are user reports of gRPC calls failing on
        # terminating pods, closed without a cause.
        affected=(("1.0.0", "1.21"),),
        fixed_in=("1.22.0",),
        issues=("knative/serving#13575", "knative/serving#16080 (PR)"),
        fix="knative/serving#16362",
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-07, evidence/2026-12-07-local-grpc/): go-shutdown, 5 unary "
            "and 5 streaming 45 s calls, pod deleted at 2 s: 1.14.2, 1.20.1 and 1.21.2 cut all 10 "
            "as queue-proxy exited at delete+30.0 s (the app exiting after it); 1.22.0 and "
            "1.23.0 answered all 10, queue-proxy exiting after the app at delete+43 s"
        ),
    ),
    KnownFailure(
        id="queue-proxy-cuts-h2c-60s-after-drain",
        title=(
            "from 1.22 queue-proxy waits for its hijacked (h2c) connections at most 60 s after "
            "its drain, then exits: a gRPC call still running then is cut, though the pod's "
            "grace period (the revision timeout) allows it to finish"
        ),
        scenarios=("grpc-unary-long", "grpc-stream-long"),
        configs=("default",),
        profiles=("seed",),  # 300 s calls; the quick profile's 75 s calls end within the 60 s
        # #16362 (knative-v1.22.0): after Shutdown, poll the hijack tracker for at most 60 s.
        # No upstream report found; #16625 (open) is about a websocket handler that returns
        # right after Hijack(), not the cap. Written up, with the reproduction, in
        # evidence/2026-12-07-local-grpc/README.md.
        affected=(("1.22.0", "1.23"),),
        fixed_in=(),
        issues=("none yet: evidence/2026-12-07-local-grpc/README.md",),
        fix="none yet",
        # read in the source: queue-proxy's poll ends and it exits, closing both sides; the
        # app's GracefulStop returns then. On local the two exits are stamped 0.3 ms apart
        # (the app's first), so the timeline alone signs the cut calls "unknown".
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-07): 1.23.0 --profile=seed grpc-unary-long go-shutdown "
            "0/200, every call cut at delete+90 s (drain end + 60 s) with no answer; by hand, "
            "120 s unary and streaming calls cut at delete+90.07 s, queue-proxy's exit; 45 s "
            "calls pass on 1.22.0 and 1.23.0"
        ),
    ),
    KnownFailure(
        id="activator-cuts-hijacked-connections-at-drain",
        title=(
            "an activator pod that is deleted cuts every websocket session and gRPC (h2c) "
            "call it proxies when it exits (its 45 s drain, then Shutdown): both ride "
            "connections hijacked from http.Server, whose Shutdown neither waits for nor "
            "closes them (and the h2c handler's http2.Server sends no GOAWAY), so they end "
            "with the process, though the app and its pod serve on"
        ),
        scenarios=("activator-delete-websocket", "activator-delete-grpc-stream"),
        configs=("default",),
        # cmd/activator/main.go, the same at knative-v1.14.0 and v1.23.0: readiness fails,
        # time.Sleep(DefaultDrainTimeout = 45 s), Shutdown(context.Background()) of servers
        # built by pkgnet.NewServer (h2c.NewHandler around an http2.Server never passed to
        # ConfigureServer), then main returns; no hijack tracker (#16362 is queue-proxy's
        # only). Measured on 1.23.0. #4654 (closed, 2019) asked the activator to drain and
        # was closed on Shutdown being enough. Written up with the reproduction in
        # evidence/2026-12-08-kind-1.23/README.md.
        affected=(("1.14.0", "1.23"),),
        fixed_in=(),
        issues=(
            "none yet: evidence/2026-12-08-kind-1.23/README.md",
            "related: knative/serving#4654 (closed)",
        ),
        fix="none yet",
        signature="activator",
        evidence=(
            "kind, 1.23.0 behind Kourier (2026-12-08), 2 activators, one deleted at 2 s: of "
            "20 websocket sessions the 11 on it cut without a close frame at delete+55 s, its "
            "exit, the 9 on the other ended as planned at 90 s; of 20 server-streaming calls "
            "of 75 s the 10 on it reset (RST_STREAM NO_ERROR) then, the other 10 OK"
        ),
    ),
    KnownFailure(
        id="queued-requests-sent-after-app-sigterm",
        title=(
            "with containerConcurrency, requests waiting in queue-proxy's breaker when the pod "
            "is deleted are sent to the app after its SIGTERM: the preStop returns when 30 s "
            "pass without a new request, whatever is still queued, the app stops listening "
            "as a drain-clean app does, and every queued request gets a 502 'connection "
            "refused'"
        ),
        scenarios=("queued-during-termination",),
        configs=("default",),
        # Measured on 1.14.2 and 1.23.0 (the range given); older releases not run. No
        # upstream report found. Written up with the reproduction in
        # evidence/2026-12-07-local-queued/README.md.
        affected=(("1.14.0", "1.23"),),
        fixed_in=(),
        issues=("none yet: evidence/2026-12-07-local-queued/README.md",),
        fix="none yet",
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-07): containerConcurrency 1, 6 x 20 s requests, pod "
            "deleted at 2 s: on 1.14.2 and 1.23.0 go-shutdown and python-gunicorn-exec 2/6, "
            "the in-flight request served, the 4 queued ones 502 'dial tcp 127.0.0.1:8080: "
            "connect: connection refused' at delete+38 s, when queue-proxy sent them to an "
            "app that had stopped listening at its SIGTERM (delete+30 s)"
        ),
    ),
    KnownFailure(
        id="response-start-timeout-hangs-stream",
        title=(
            "with responseStartTimeoutSeconds set, a response that started before it and "
            "ends after it never completes: queue-proxy's timeout handler blocks forever "
            "draining the expired timer, so the terminating chunk is never written and "
            "queue-proxy is SIGKILLed at the end of the grace period (1.8.6, 1.9.3, "
            "1.10-1.18; on 1.7.0-1.8.5 and 1.9.0-1.9.2 queue-proxy-exits-before-in-flight "
            "cuts the stream at about 30 s first)"
        ),
        scenarios=("streaming-long",),
        configs=("response-start-timeout",),
        # pkg/http/handler/timeout.go: putTimer(responseStartTimeout, drained=false) after
        # the timer fired with the response started (responseStartTimeoutDrained only set
        # when it wrote the 504); REVISION_RESPONSE_START_TIMEOUT_SECONDS exists from 1.7.
        # #15899 (cf4b1ae481) sets it in both branches, first in knative-v1.19.0. On a
        # cluster the activator wraps requests in the same handler from 1.9, so with the
        # activator in the path the signature may be the activator's.
        affected=(("1.7.0", "1.18"),),
        fixed_in=("1.19.0",),
        issues=("knative/serving#15352",),
        fix="knative/serving#15899",
        signature="queue-proxy",
        evidence=(
            "local platform (2026-12-01), responseStartTimeoutSeconds 10, 75 s streams: "
            "1.14.2 go-shutdown 0/20, each body's end line arrived but no terminating chunk "
            "until queue-proxy was SIGKILLed at delete+120 s (app exited at 73 s); 1.23.0 "
            "20/20, pod gone at 73 s. 1.18.x and 1.19.0 not run"
        ),
    ),
)


INTERNAL_TLS_PRESTOP = KnownFailure(
    id="internal-tls-prestop-gets-400",
    title=(
        "with internal TLS queue-proxy serves its admin port (8022) over TLS only, so "
        "kubelet's plain-HTTP preStop GET /wait-for-drain gets 400 at once and the app is "
        "sent SIGTERM while queue-proxy still takes new requests for its 30 s drain"
    ),
    # Only the second batch shows it: it reaches queue-proxy after the app stopped
    # listening (502 from queue-proxy); requests already in flight still drain.
    scenarios=("second-batch-during-termination",),
    configs=("internal-tls",),
    # pkg/queue/sharedmain/main.go (cmd/queue/main.go before 1.7): from knative-v1.4.0 the
    # admin server moves to the TLS servers when the certificate files exist ("Drop admin
    # http server"); #16163 (54868c2355) keeps it on HTTP, first in knative-v1.20.0, not
    # backported (1.19.9 still has tlsServers["admin"]). The preStop has always been a
    # plain HTTPGet on QueueAdminPort (deploy.go) and kubelet ignores its status.
    affected=(("1.4.0", "1.19"),),
    fixed_in=("1.20.0",),
    issues=("knative/serving#16162",),
    fix="knative/serving#16163",
    signature="queue-proxy",
    evidence=(
        "local platform: 1.14.2 answers the preStop 'Client sent an HTTP request to an "
        "HTTPS server' (400) at delete+0 s, go-shutdown gets SIGTERM at once and all 50 "
        "batch-2 requests get 502 from queue-proxy; 1.20.1 answers 200 at delete+35 s "
        "and all 100 pass"
    ),
)
# The same bug seen by an app that exits at once on SIGTERM, where it must pass: its
# SIGTERM now comes at the delete, while the short requests are still in flight.
INTERNAL_TLS_PRESTOP_EXIT = dataclasses.replace(
    INTERNAL_TLS_PRESTOP,
    id="internal-tls-prestop-gets-400-exit-at-once",
    scenarios=("pod-delete-short", "deletion-timeliness"),
    apps=("go-exit",),
    evidence=(
        "local platform: 1.14.2 sends go-exit SIGTERM at delete+0 s (preStop 400) and it "
        "cuts the pod-delete-short requests in flight (502 from queue-proxy); 1.20.1 waits "
        "for the drain (preStop 200 at delete+30 s) and they pass"
    ),
)
KNOWN_FAILURES += (INTERNAL_TLS_PRESTOP, INTERNAL_TLS_PRESTOP_EXIT)


def known_failure(
    scenario: str, config: str, version: str, app: str | None = None, profile: str | None = None
) -> KnownFailure | None:
    """The record that says a must-pass ``app`` fails this case on ``version`` at
    ``profile``, if any."""
    for record in KNOWN_FAILURES:
        if record.matches(scenario, config, version, app, profile):
            return record
    return None


def by_id(record_id: str) -> KnownFailure:
    """The record named ``record_id`` (KeyError naming the known ids otherwise)."""
    for record in KNOWN_FAILURES:
        if record.id == record_id:
            return record
    raise KeyError(f"no known failure {record_id!r}; known: {[r.id for r in KNOWN_FAILURES]}")
