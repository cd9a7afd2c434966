"""Before any case runs: does each app of the run serve the fixture contract on the platform?

One pod per app, once per session: ``GET /?sleep=0`` through the real queue-proxy must
answer 200 with ``slept 0 ms on <pod>`` (fixtures/apps/README.md; the load engine counts
an answer without "slept" as failed). An image that is missing, has no command, exits,
never listens or answers something else is then one line before the first case, instead
of one readiness timeout (local 60 s, cluster 300 s) and one failure per case. On a
cluster the pod is a Knative Service in its own namespace and the request goes through
the ingress, so the route is checked too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect as ws_connect

from ..platforms.cluster.api import ClusterError
from ..platforms.cluster.faults import ContainerStartError
from ..platforms.cluster.knative_pod import READY_TIMEOUT_S as CLUSTER_READY_TIMEOUT_S
from ..platforms.local import READY_TIMEOUT_S, LocalPlatform, LocalPlatformError, PodStartError
from ..platforms.pod import InfrastructureError
from ..platforms.serving_platform import ServingPlatform

if TYPE_CHECKING:
    from ..matrix.cases import Case

CONTRACT_PATH = "/?sleep=0"
CONTRACT_BODY = "slept"  # what the runner's load engine expects in every answer (expect_body)
CONTRACT = (
    "GET /?sleep=<ms> answers 200 'slept <ms> ms on <pod>' on $PORT (fixtures/apps/README.md)"
)
STREAM_PATH = "/stream?duration=1000&interval=250"
STREAM_END = "stream complete"  # the load engine's check of a complete stream body
WS_PATH = "/ws"
WS_MESSAGE = "knative-drain preflight"
LONG_LIVED_CONTRACT = (
    "GET /stream?duration=<ms>&interval=<ms> a chunked body ending 'stream complete: ...' "
    "and a websocket echo on /ws (fixtures/apps/README.md)"
)
ANSWER_TIMEOUT_S = 10.0
#: Knative says Ready once its ingress is; a gateway may still answer 404/503 for the new
#: host for a moment (its configuration reaching every Envoy): asked again for this long.
ROUTE_SETTLE_S = 30.0
#: Kourier's answers for a host it has no route, or no ready endpoint, for (yet)
ROUTING = ("answered 404 ", "answered 503 ")


#: what the preflight asks for each kind of load, in its lines
KIND_ENDPOINTS = {"http": "GET /?sleep=0", "stream": "GET /stream", "websocket": "/ws echo"}


@dataclass(frozen=True)
class Checked:
    """What the preflight found for one app: the problem that ends the session, if any,
    and the endpoints of ``optional`` kinds the app does not serve (kind -> what it did):
    their scenarios are skipped."""

    problem: ContractProblem | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContractProblem:
    """Why an app cannot be measured; ``culprit`` says whose it is: the app's image
    ("app") or the platform's (queue-proxy, Docker: "platform")."""

    app: str
    image: str
    culprit: str
    detail: str


def ask_each(
    url: str, headers: dict[str, str], kinds: Iterable[str], where: str
) -> dict[str, tuple[str, str]]:
    """Every endpoint of ``kinds`` that breaks the contract: kind -> (culprit, detail).

    ``http``: ``GET /?sleep=0``; ``stream``: a 1 s ``/stream`` whose body ends
    ``stream complete``; ``websocket``: ``/ws`` echoes one message. The HTTP contract first;
    nothing else is asked when it fails. No answer at all is culprit "no answer": the app's
    behind a local queue-proxy, the platform's (its ingress) on a cluster. ``where`` names
    the path the request took, for the message.
    """
    host = headers.get("Host")
    failed: dict[str, tuple[str, str]] = {}
    for kind in ("http", *sorted(set(kinds) - {"http"})):
        path = {"http": CONTRACT_PATH, "stream": STREAM_PATH, "websocket": WS_PATH}[kind]
        said = f"GET {path}" + (f" with Host {host}" if host else "") + f" through {where}"
        try:
            if kind == "websocket":
                detail = _websocket(url, host)
            else:
                detail = _http(url + path, headers, kind)
        except (requests.RequestException, OSError, WebSocketException) as exc:
            why = f"{said} got no answer ({type(exc).__name__}: {exc})"
            failed[kind] = ("no answer", why[:400])
        else:
            if detail is not None:
                failed[kind] = ("app", f"{said} {detail}")
        if "http" in failed:
            break
    return failed


def _http(url: str, headers: dict[str, str], kind: str) -> str | None:
    answer = requests.get(url, headers=headers, timeout=ANSWER_TIMEOUT_S)
    if kind == "http":
        if answer.status_code == 200 and CONTRACT_BODY in answer.text:
            return None
        return f"answered {answer.status_code} {answer.text[:120]!r}, not 200 'slept 0 ms on <pod>'"
    lines = answer.text.strip().splitlines()
    if answer.status_code == 200 and lines and lines[-1].startswith(STREAM_END):
        return None
    last = lines[-1][:120] if lines else ""
    return (
        f"answered {answer.status_code}, last line {last!r}, not a chunked body ending "
        f"'{STREAM_END}: ...'"
    )


def _websocket(url: str, host: str | None) -> str | None:
    target = urlsplit(url)
    sock = socket.create_connection((target.hostname, target.port), timeout=ANSWER_TIMEOUT_S)
    try:
        with ws_connect(
            f"ws://{host or target.netloc}{WS_PATH}",
            sock=sock,
            open_timeout=ANSWER_TIMEOUT_S,
            close_timeout=2,
            proxy=None,
            compression=None,
        ) as ws:
            ws.send(WS_MESSAGE)
            echoed = ws.recv(timeout=ANSWER_TIMEOUT_S)
    except InvalidStatus as exc:
        return f"refused the websocket upgrade: {exc.response.status_code}"
    finally:
        sock.close()
    return None if echoed == WS_MESSAGE else f"echoed {str(echoed)[:80]!r}, not {WS_MESSAGE!r}"


def check_local(
    platform: LocalPlatform,
    app: str,
    image: str | None,
    kinds: Iterable[str] = ("http",),
    ready_timeout_s: float = READY_TIMEOUT_S,
    optional: frozenset[str] = frozenset(),
) -> Checked:
    """Start one pod of ``app`` (or ``image``), ask it the contract, remove it. An endpoint
    of an ``optional`` kind the app does not serve is recorded, not a problem."""
    pod = platform.pod(app, image, timeout_seconds=30)

    def problem(culprit: str, detail: str) -> Checked:
        return Checked(ContractProblem(app, pod.app_image, culprit, detail))

    try:
        try:
            pod.start(ready_timeout_s)
        except PodStartError as exc:
            return problem("app" if exc.role == "user-container" else "platform", str(exc))
        except (InfrastructureError, LocalPlatformError) as exc:
            return problem("platform", str(exc))
        found = ask_each(pod.url, {}, kinds, "queue-proxy")
        found = {k: ("app", d) for k, (_c, d) in found.items()}  # no answer here: the app's

        def with_state(culprit: str, detail: str) -> Checked:
            return problem(culprit, f"{detail}; user-container: {pod.state('user-container')}")

        return _checked(found, optional, with_state)
    finally:
        pod.remove()


def check_cluster(
    platform: ServingPlatform,
    app: str,
    image: str | None,
    kinds: Iterable[str] = ("http",),
    ready_timeout_s: float = CLUSTER_READY_TIMEOUT_S,
    optional: frozenset[str] = frozenset(),
) -> Checked:
    """Start one Knative Service of ``app`` (or ``image``), ask it the contract through the
    ingress, remove its namespace. ``optional``: as :func:`check_local`."""
    try:
        pod = platform.pod(app, image, timeout_seconds=30)
    except ClusterError as exc:
        return Checked(ContractProblem(app, image or "?", "platform", str(exc)))
    pod.ready_timeout_s = ready_timeout_s

    def problem(culprit: str, detail: str) -> Checked:
        return Checked(ContractProblem(app, pod.spec.image, culprit, detail))

    try:
        try:
            pod.start()
        except ContainerStartError as exc:
            return problem("app" if exc.container == "user-container" else "platform", str(exc))
        except ClusterError as exc:
            return problem("platform", str(exc))
        where = f"the ingress on {pod.url}"

        @retry(  # the route settling: infrastructure, asked again; nothing measured here
            stop=stop_after_delay(ROUTE_SETTLE_S),
            wait=wait_fixed(2),
            retry=retry_if_result(lambda found: any(_routing(d) for _c, d in found.values())),
            retry_error_callback=lambda state: state.outcome.result(),
        )
        def asked() -> dict[str, tuple[str, str]]:
            return ask_each(pod.url, pod.headers, kinds, where)

        # no answer through the ingress: the platform's
        found = {k: ("platform" if c == "no answer" else c, d) for k, (c, d) in asked().items()}
        return _checked(found, optional, problem)
    finally:
        pod.remove()


def _checked(
    found: dict[str, tuple[str, str]],
    optional: frozenset[str],
    problem: Callable[[str, str], Checked],
) -> Checked:
    """The first failure that ends the session (any of a required kind, or the platform's),
    else the optional kinds the app does not serve."""
    for kind, (culprit, detail) in found.items():
        if kind not in optional or culprit != "app":
            return problem(culprit, detail)
    return Checked(unsupported={k: d for k, (_c, d) in found.items()})


def done_line(
    apps: list[str], kinds: Iterable[str], unserved: dict[str, str], through: str, took_s: float
) -> str:
    """The preflight's line once every app passed: what each served, and what not."""
    served = [k for k in ("http", *sorted(set(kinds) - {"http"})) if k not in unserved]
    asked = ", ".join(KIND_ENDPOINTS[k] for k in served)
    done = f"{', '.join(apps)} served {asked} through {through} ({took_s:.1f} s)"
    if unserved:
        done += "; not served, their scenarios skipped (--app-strict refuses such an image): "
        done += "; ".join(unserved.values())
    return done


def unserved_reason(unserved: dict[str, str], case: Case) -> str | None:
    """Why ``case`` is skipped: a kind of load it sends that the --app-image does not serve
    (``unserved``: kind -> what the image did instead), else None."""
    for kind in sorted({b.kind for plan in case.scenario.plans.values() for b in plan.batches}):
        if kind in unserved:
            return (
                f"{case.id}: the --app-image does not serve {KIND_ENDPOINTS[kind]} "
                f"({unserved[kind]}); --app-strict refuses such an image instead"
            )
    return None


def _routing(detail: str) -> bool:
    return any(answer in detail for answer in ROUTING)


def session_line(
    problem: ContractProblem, custom: bool, platform: str, strict: bool = False
) -> str:
    """The one line that ends the session: the option (or fixture app) and what it did."""
    if problem.culprit == "app" and custom:
        long_lived = STREAM_PATH.split("?")[0] in problem.detail or WS_PATH in problem.detail
        flag = "--app-strict: " if strict and long_lived else ""
        return f"{flag}--app-image={problem.image}: {problem.detail}; the app must serve: " + (
            f"{LONG_LIVED_CONTRACT}, or deselect the scenarios that use it "
            "(-k 'not streaming_long and not websocket_long'), or leave out --app-strict "
            "(they are then skipped, saying why)"
            if long_lived
            else CONTRACT
        )
    if problem.culprit == "app":
        return (
            f"fixture app {problem.app} ({problem.image}) does not serve the contract on "
            f"--platform={platform}: {problem.detail}"
        )
    return (
        f"--platform={platform}: the pod for {problem.app} ({problem.image}) did not come up: "
        f"{problem.detail}"
    )
