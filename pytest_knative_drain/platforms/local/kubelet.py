"""What kubelet does to the containers of a pod it deletes, done to Docker containers.

kubelet's killPod stops every container at once, each on its own goroutine. queue-proxy
gets SIGTERM at t0 and SIGKILL when the grace period ends. The user container first runs
its preStop hook, Knative's ``GET :8022/wait-for-drain``, which returns once queue-proxy
has drained. Then it gets SIGTERM with what is left of the grace period, at least 2 s
(kubelet's minimumGracePeriodInSeconds after a preStop), and SIGKILL when that ends.

The pod (pod.py) owns the containers and the timeline. This module only signals, waits
and records, through the callbacks it is given, so the same sequence can stop one
container (a restart) as well as a whole pod.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

import docker.errors
import requests
import urllib3.exceptions
from docker.models.containers import Container

from ..pod import Termination

QUEUE_ADMIN_PORT = 8022  # networking.QueueAdminPort: where the preStop asks
DRAIN_PATH = "/wait-for-drain"  # queue.RequestQueueDrainPath
KUBELET_MIN_GRACE_S = 2.0  # kubelet's minimumGracePeriodInSeconds after a preStop
# the docker SDK's container.wait(timeout=...) times out with requests' exceptions
_WAIT_TIMEOUT = (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)


def timed_out(exc: BaseException) -> bool:
    """A wait that ran out of time (requests' read timeout, sometimes wrapped in a
    ConnectionError "Read timed out."); any other ConnectionError: the engine is gone."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
    )


def error_line(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class Kubelet:
    """The termination of one pod's containers, as kubelet does it.

    ``event(name, detail)`` records a step on the pod's timeline, ``fault(what)`` a way
    the platform failed under the pod, ``exited(role, detail, since_mono)`` a container's
    exit at the engine's own exit time.
    """

    def __init__(
        self,
        containers: Mapping[str, Container],
        admin_url: str,  # queue-proxy's admin port as this host reaches it, with DRAIN_PATH
        *,
        event: Callable[[str, str], object],
        fault: Callable[[str], object],
        exited: Callable[[str, str, float], None],
    ) -> None:
        self.containers = containers
        self.admin_url = admin_url
        self.event = event
        self.fault = fault
        self.exited = exited
        self._qp_signalled = threading.Event()  # queue-proxy's SIGTERM was delivered

    def kill_pod(self, termination: Termination) -> list[threading.Thread]:
        """Start stopping queue-proxy and the user container at once; their threads."""
        threads = []
        for role, target in (
            ("queue-proxy", self._stop_queue_proxy),
            ("user-container", self._stop_user_container),
        ):
            thread = threading.Thread(
                target=target, args=(termination,), name=f"kubelet-{role}", daemon=True
            )
            threads.append(thread)
            thread.start()
        return threads

    def _stop_queue_proxy(self, termination: Termination) -> None:
        self.signal("queue-proxy", "SIGTERM")
        self._qp_signalled.set()
        self.wait_or_kill("queue-proxy", termination.t0_mono + termination.grace_s, termination)

    def restart_user_container(
        self, termination: Termination, start_again: Callable[[], None]
    ) -> threading.Thread:
        """Restart the user container as kubelet does after a failed liveness probe (its
        killContainer, then a new container): the preStop, SIGTERM, SIGKILL at the end of
        the grace period, then ``start_again``. queue-proxy gets no signal: its drain
        handler sees none and ends the drain after 1 s (knative/serving
        pkg/queue/sharedmain/handlers.go ``adminHandler``, 1.7 and later)."""

        def restart() -> None:
            self._stop_user_container(termination, queue_proxy_signalled=False)
            start_again()

        thread = threading.Thread(target=restart, name="kubelet-restart", daemon=True)
        thread.start()
        return thread

    def _stop_user_container(
        self, termination: Termination, *, queue_proxy_signalled: bool = True
    ) -> None:
        t0, grace = termination.t0_mono, termination.grace_s
        # kubelet's runtime delivers queue-proxy's SIGTERM in milliseconds; a Docker engine
        # under load (many pods at once) can take seconds, and queue-proxy's drain handler
        # returns after 1 s when no SIGTERM came (a liveness restart): the preStop waits
        if queue_proxy_signalled:
            self._qp_signalled.wait(max(grace, 1.0))
        self.event("preStop started", f"GET :{QUEUE_ADMIN_PORT}{DRAIN_PATH}")
        status: int | None = None
        try:
            with urllib.request.urlopen(self.admin_url, timeout=max(grace, 1.0)) as response:  # noqa: S310
                status = response.status
            self.event("preStop returned", f"status {status}")
        except urllib.error.HTTPError as exc:
            status = exc.code
            self.event("preStop returned", f"status {status}")
        except OSError as exc:  # kubelet logs FailedPreStopHook and goes on
            self.event("preStop failed", str(exc))
        termination.prestop_s = time.monotonic() - t0
        termination.prestop_status = status
        remaining = max(t0 + grace - time.monotonic(), KUBELET_MIN_GRACE_S)
        self.signal("user-container", "SIGTERM")
        self.wait_or_kill("user-container", time.monotonic() + remaining, termination)

    def signal(self, role: str, signal: str) -> None:
        """Send ``signal`` to ``role``'s container; one already gone is said, not raised."""
        container = self.containers.get(role)
        if container is None:  # the pod removed it after a fault: nothing left to signal
            return
        self.event(f"{signal} {role}", "")
        try:
            container.kill(signal=signal)
        except docker.errors.NotFound:
            self.fault(f"{role} container removed by someone else (seen at {signal})")
        except docker.errors.APIError:  # already exited
            pass
        except requests.exceptions.ConnectionError as exc:
            self.fault(f"Docker engine unreachable at {signal} {role}: {error_line(exc)}")

    def wait_or_kill(self, role: str, deadline: float, termination: Termination) -> None:
        """Wait for ``role`` to exit until ``deadline``, then SIGKILL it and wait again."""
        container = self.containers.get(role)
        if container is None:  # the pod removed it after a fault: nothing left to wait for
            return
        since = time.monotonic()
        try:
            result = container.wait(timeout=max(deadline - time.monotonic(), 0.01))
            self.exited(role, f"exit code {result.get('StatusCode')}", since)
            return
        except _WAIT_TIMEOUT as exc:  # the docker SDK's wait timeout is requests' read timeout
            if not timed_out(exc):
                self.fault(f"Docker engine unreachable waiting for {role}: {error_line(exc)}")
                return
        except docker.errors.NotFound:
            self.fault(f"{role} container removed by someone else (seen waiting for its exit)")
            return
        except docker.errors.APIError as exc:
            self.event(f"{role} exited", f"container gone: {exc}")
            return
        self.signal(role, "SIGKILL")
        termination.killed.append(role)
        since = time.monotonic()
        try:
            result = container.wait(timeout=30)
        except (*_WAIT_TIMEOUT, docker.errors.APIError) as exc:
            if isinstance(exc, docker.errors.NotFound):
                self.fault(f"{role} container removed by someone else (seen after SIGKILL)")
            elif isinstance(exc, requests.exceptions.ConnectionError) and not timed_out(exc):
                self.fault(f"Docker engine unreachable after SIGKILL of {role}: {error_line(exc)}")
            self.event(f"{role} exited", f"not confirmed after SIGKILL: {exc}")
            return
        self.exited(role, f"exit code {result.get('StatusCode')} after SIGKILL", since)
