"""A user container's restart read against what Knative promises the requests around it.

kubelet restarts the user container after a failed liveness probe: its preStop
(``GET :8022/wait-for-drain``), SIGTERM, SIGKILL at the end of the grace period, then a
new container. queue-proxy stays and gets no signal. Its drain handler ends the drain 1 s
after the preStop asked, since no SIGTERM came (knative/serving
pkg/queue/sharedmain/handlers.go ``adminHandler``, the same from 1.7 to 1.23), and it goes
on proxying to the user port. Read from that code (and knative/pkg network/transports.go,
which retries dial timeouts only):

- a request in flight at the restart gets what the app does with SIGTERM: it must end OK;
- a request that arrives while nothing listens on the user port is answered at once by
  queue-proxy, 502 ``dial tcp 127.0.0.1:PORT: connect: connection refused``: Knative
  neither holds nor retries it (knative/serving#14980, closed unfixed). Such answers are
  counted apart, not in the strict SLI; any other failure then (a hang, a reset, a cut) is
  a failure like any other;
- the pod must be Ready again (kubelet's probe through queue-proxy answered 200) within
  :data:`READY_AGAIN_BOUND_S` of the new container's start, and what follows is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..load.records import RequestRecord
from .judge import HINTS, judge

#: How soon after the new user container started the pod must answer kubelet's readiness
#: probe again. queue-proxy probes the app every 50 ms (periodSeconds 0: pkg/queue/readiness);
#: the fixture apps listen within a second. Measured on the local platform: see
#: docs/scenarios.md (container-restart). A bound, not a benchmark: a slower restart is a
#: finding to read, not noise.
READY_AGAIN_BOUND_S = 10.0

RESTART_EVENT = "liveness restart"


@dataclass
class RestartReading:
    """The records Knative promises to serve, the ones it may refuse, and the pod's way back."""

    promised: list[RequestRecord]
    refused_while_down: list[RequestRecord]
    t0_mono: float | None
    new_container_mono: float | None = None
    ready_again_mono: float | None = None
    not_ready: str = ""  # why the pod never came back, from its timeline
    problems: list[str] = field(default_factory=list)

    def _since(self, mono: float | None) -> float | None:
        return None if mono is None or self.t0_mono is None else round(mono - self.t0_mono, 3)

    def line(self) -> str:
        """The restart in one line, for the markdown report."""
        new, ready = self._since(self.new_container_mono), self._since(self.ready_again_mono)
        back = f"Ready again +{ready:.1f} s" if ready is not None else "NOT Ready again"
        return (
            f"new user container +{new:.1f} s, " if new is not None else "no new user container, "
        ) + (
            f"{back} (bound: {READY_AGAIN_BOUND_S:g} s after the new container); "
            f"{len(self.refused_while_down)} requests refused by queue-proxy while no app "
            "listened (Knative's answer there: not in the SLIs)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "new_container_after_s": self._since(self.new_container_mono),
            "ready_again_after_s": self._since(self.ready_again_mono),
            "ready_again_bound_s": READY_AGAIN_BOUND_S,
            "refused_while_down": len(self.refused_while_down),
            "promised": len(self.promised),
            "problems": self.problems,
        }


def read_restart(records: Sequence[RequestRecord], events: Sequence[Any]) -> RestartReading:
    """Split ``records`` by Knative's promise and check the pod came back in time."""
    t0 = next((e.mono for e in events if e.name == RESTART_EVENT), None)
    started = [e.mono for e in events if e.name == "started user-container"]
    new = next((m for m in started if t0 is not None and m > t0), None)
    ready = next((e.mono for e in events if e.name == "ready again"), None)
    not_ready = next((e.detail for e in events if e.name == "not ready again"), "")
    refused, promised = [], []
    for r in records:
        if _refused_while_down(r, t0, ready):
            refused.append(r)
        else:
            promised.append(r)
    reading = RestartReading(promised, refused, t0, new, ready, not_ready)
    if t0 is None:
        reading.problems.append("no liveness restart on the pod's timeline: nothing was tested")
    elif ready is None:
        why = not_ready or (
            "no new user container started" if new is None else "no ready answer recorded"
        )
        reading.problems.append(f"the pod was not Ready again after the restart: {why}")
    elif new is not None and ready - new > READY_AGAIN_BOUND_S:
        reading.problems.append(
            f"Ready again {ready - new:.1f} s after the new user container started; "
            f"must be within {READY_AGAIN_BOUND_S:g} s"
        )
    return reading


def _refused_while_down(r: RequestRecord, t0: float | None, ready: float | None) -> bool:
    """queue-proxy's own 'connection refused' 502 to a request sent between the restart and
    Ready again: the one answer Knative gives while no app listens."""
    if t0 is None or r.sent_mono is None or r.sent_mono < t0:
        return False
    if ready is not None and r.sent_mono >= ready:
        return False
    j = judge(r)
    return j.cls == "http_5xx" and j.signature == "queue-proxy" and j.hint == HINTS["app_gone"]
