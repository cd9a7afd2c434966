"""Before any case runs: does each app of the run serve the fixture contract on the platform?

One pod per app, once per session: ``GET /?sleep=0`` through the real queue-proxy must
answer 200 with ``slept 0 ms on <pod>`` (fixtures/apps/README.md; the load engine counts
an answer without "slept" as failed). An image that is missing, has no command, exits,
never listens or answers something else is then one line before the first case, instead
of one readiness timeout (60 s) and one failure per case.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from .platforms.local import (
    READY_TIMEOUT_S,
    LocalPlatform,
    LocalPlatformError,
    PodStartError,
)
from .platforms.pod import InfrastructureError

CONTRACT_PATH = "/?sleep=0"
CONTRACT_BODY = "slept"  # what the runner's load engine expects in every answer (expect_body)
CONTRACT = (
    "GET /?sleep=<ms> answers 200 'slept <ms> ms on <pod>' on $PORT (fixtures/apps/README.md)"
)
ANSWER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ContractProblem:
    """Why an app cannot be measured; ``culprit`` says whose it is: the app's image
    ("app") or the platform's (queue-proxy, Docker: "platform")."""

    app: str
    image: str
    culprit: str
    detail: str


def check_local(
    platform: LocalPlatform,
    app: str,
    image: str | None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ContractProblem | None:
    """Start one pod of ``app`` (or ``image``), ask it the contract, remove it."""
    pod = platform.pod(app, image, timeout_seconds=30)

    def problem(culprit: str, detail: str) -> ContractProblem:
        return ContractProblem(app, pod.app_image, culprit, detail)

    try:
        try:
            pod.start(ready_timeout_s)
        except PodStartError as exc:
            return problem("app" if exc.role == "user-container" else "platform", str(exc))
        except (InfrastructureError, LocalPlatformError) as exc:
            return problem("platform", str(exc))
        try:
            answer = requests.get(pod.url + CONTRACT_PATH, timeout=ANSWER_TIMEOUT_S)
        except requests.RequestException as exc:
            return problem(
                "app",
                f"GET {CONTRACT_PATH} through queue-proxy got no answer ({type(exc).__name__}); "
                f"user-container: {pod.state('user-container')}",
            )
        if answer.status_code != 200 or CONTRACT_BODY not in answer.text:
            return problem(
                "app",
                f"GET {CONTRACT_PATH} through queue-proxy answered {answer.status_code} "
                f"{answer.text[:120]!r}, not 200 'slept 0 ms on <pod>'; "
                f"user-container: {pod.state('user-container')}",
            )
        return None
    finally:
        pod.remove()


def session_line(problem: ContractProblem, custom: bool, platform: str) -> str:
    """The one line that ends the session: the option (or fixture app) and what it did."""
    if problem.culprit == "app" and custom:
        return f"--app-image={problem.image}: {problem.detail}; the app must serve: {CONTRACT}"
    if problem.culprit == "app":
        return (
            f"fixture app {problem.app} ({problem.image}) does not serve the contract on "
            f"--platform={platform}: {problem.detail}"
        )
    return (
        f"--platform={platform}: the pod for {problem.app} ({problem.image}) did not come up: "
        f"{problem.detail}"
    )
