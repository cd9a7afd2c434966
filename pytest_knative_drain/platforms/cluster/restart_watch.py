"""A user container's restart on a cluster, read from the pod watch in the local platform's
words: the old instance's exit, the new one's start, and when the pod was Ready again."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..pod import PodEvent
from .pod_watch import PodWatch, pod_ready, sigkilled

STARTED = "started user-container"


@dataclass(frozen=True)
class RestartEnd:
    exited: PodEvent | None  # the old instance's exit (at its finishedAt)
    ready_again: PodEvent | None  # "ready again", when the pod came back with the new one
    killed: bool  # the old instance was SIGKILLed at the end of its grace period


def _since(watch: PodWatch, name: str, t0: float) -> list[PodEvent]:
    return [e for e in watch.events if e.pod == name and e.mono >= t0]


def still_missing(watch: PodWatch, name: str, t0: float) -> str | None:
    """What the pod still lacks to be back after a restart at ``t0`` (None: it is back)."""
    if not any(e.name == STARTED for e in _since(watch, name, t0)):
        return "user-container not restarted yet"
    pod = watch.last(name)
    return None if pod is not None and pod_ready(pod) else "pod not Ready yet"


def read_end(watch: PodWatch, name: str, t0: float) -> RestartEnd:
    """How the restart at ``t0`` went. The pod was Ready again at its last 'ready' after
    the new start, or at the start itself if it never went NotReady (a restart quicker than
    kubelet's readiness probe)."""
    events = _since(watch, name, t0)
    exits = [e for e in events if e.name == "user-container exited"]
    killed = any(sigkilled(e.detail) for e in exits)
    started = next((e for e in events if e.name == STARTED), None)
    ready = None
    if started is not None and still_missing(watch, name, t0) is None:
        at = max([started, *(e for e in events if e.name == "ready")], key=lambda e: e.mono)
        ready = replace(at, name="ready again", detail="pod Ready")
    return RestartEnd(exits[0] if exits else None, ready, killed)
