"""Container logs on a cluster, kept from the moment a pod is picked until it is gone.

A failed case is judged after its pod is gone, when the API server answers 404 to a log
read; a follower started early holds what each container wrote up to its exit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from .api import REQUEST_TIMEOUT, error_line

#: A log follower ends on its own at the latest this long after it started (a backstop:
#: the case stops it when it ends; the seed profile's longest case is well under this).
LOG_FOLLOW_LIMIT_S = 2 * 3600.0
LOG_CONNECT_TIMEOUT_S = 10.0
LOG_LIMIT_BYTES = 1 << 20  # the newest bytes kept per container
STREAM_ENDED = "the container's log stream ended"  # kubelet ends it when the container exits
STOPPED = "stopped when the case ended"
NORMAL_ENDS = ("following", STREAM_ENDED, STOPPED)


class LogFollower:
    """Streams one container's log (``follow=True``) on a thread from the moment it starts.

    Why: a failed case is judged after the pod is gone, and the API server then answers
    404 to a log read; a follower started when the pod is picked holds everything the
    container wrote up to its exit (kubelet ends a follow stream when the container
    exits). It is bounded: a connect timeout, the API server's answer within
    REQUEST_TIMEOUT's read timeout, then a stream that may stay quiet until ``limit_s``
    after start (a container can log nothing for minutes), the newest ``limit_bytes``
    kept. ``stop()`` shuts an open stream down and joins the thread (a thread still
    waiting for the API server's answer ends by that timeout). It never raises into the
    case: any failure ends the thread and is kept in ``note`` (why there is no or only
    part of a log).
    """

    def __init__(
        self,
        core: k8s.CoreV1Api,
        namespace: str,
        pod: str,
        container: str,
        *,
        limit_s: float = LOG_FOLLOW_LIMIT_S,
        limit_bytes: int = LOG_LIMIT_BYTES,
        connect_timeout_s: float = LOG_CONNECT_TIMEOUT_S,
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.limit_s = limit_s
        self.limit_bytes = limit_bytes
        self.connect_timeout_s = connect_timeout_s
        self.note = "not started"
        self.truncated = False
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"log-{pod}-{container}", daemon=True
        )

    def start(self) -> LogFollower:
        self.note = "following"
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def text(self) -> str:
        """What the container wrote so far (its newest ``limit_bytes``)."""
        with self._lock:
            data = bytes(self._data)
        return data.decode("utf-8", errors="replace")

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        try:
            response = self.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container=self.container,
                follow=True,
                previous=False,
                _preload_content=False,
                _request_timeout=(self.connect_timeout_s, REQUEST_TIMEOUT[1]),
            )
            with self._lock:
                self._response = response
                stopped = self._stop.is_set()
            _quiet_for(response, max(1.0, deadline - time.monotonic()))
            if not stopped:
                # read1: whatever arrived, not a full 4096 (a log line must not wait)
                read1 = getattr(response, "read1", None)
                chunks = iter(lambda: read1(4096), b"") if read1 else response.stream(4096)
                for chunk in chunks:
                    self._keep(chunk)
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
            self.note = self._why_ended(deadline, STREAM_ENDED)
        except ApiException as exc:
            self.note = f"log API answered {error_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - a follower must never fail the case
            self.note = self._why_ended(deadline, f"{type(exc).__name__}: {exc}")
        finally:
            self._close()

    def _why_ended(self, deadline: float, otherwise: str) -> str:
        """Why the stream ended: stopped, out of time, or ``otherwise``."""
        if self._stop.is_set():
            return STOPPED
        if time.monotonic() > deadline:
            return f"stopped after {self.limit_s:.0f} s (limit)"
        return otherwise

    def _keep(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            extra = len(self._data) - self.limit_bytes
            if extra > 0:
                del self._data[:extra]
                self.truncated = True

    def _close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is None:
            return
        with contextlib.suppress(Exception):
            response.close()
            response.release_conn()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the stream now (unblocks a read in progress) and join the thread."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
                (shutdown or response.close)()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


def _quiet_for(response: Any, seconds: float) -> None:
    """Let an open log stream stay quiet up to ``seconds`` (the request's read timeout only
    bounded the wait for the answer). urllib3 keeps the socket on ``_connection``; when a
    version does not, the stream ends after REQUEST_TIMEOUT of silence and the follower
    says so in its note."""
    sock = getattr(getattr(response, "_connection", None), "sock", None)
    if sock is None:  # http.client's reader on the same socket
        raw = getattr(getattr(getattr(response, "_fp", None), "fp", None), "raw", None)
        sock = getattr(raw, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(seconds)
