"""What every platform's pod target reports: its timeline and how its deletion went.

The runner only needs these two shapes, whether the pod is emulated on Docker
(local) or a real Knative revision pod watched through the API server (cluster),
and one error: the platform failed under the case (:class:`InfrastructureError`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


class InfrastructureError(RuntimeError):
    """The platform failed under a running case (a container removed by someone else, the
    engine or API server gone): what was measured says nothing about draining, so the case
    ends with this error instead of a verdict."""


#: a cluster exit's stamp in its detail (cluster/pod_watch: kubelet's finishedAt, whole seconds)
FINISHED_AT = re.compile(r"finishedAt (\d\d):(\d\d):(\d\d)")


def stamp_slack_s(event: Any) -> float:
    """How much later than its stamp an exit may really have been: up to 1 s for a cluster
    exit stamped at kubelet's whole-second ``finishedAt``, none for other events (the local
    platform stamps Docker's nanosecond FinishedAt)."""
    return 1.0 if FINISHED_AT.search(getattr(event, "detail", "")) else 0.0


@dataclass(frozen=True)
class PodEvent:
    """One step of a pod's life, stamped like the request records (monotonic + wall)."""

    pod: str
    name: str
    mono: float
    wall: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Termination:
    """How a deletion went: when it was asked for, when the pod was gone, what was killed.

    ``prestop_*`` are known only where the platform runs the preStop hook itself (local).
    """

    t0_mono: float
    grace_s: float
    gone_mono: float | None = None
    killed: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)  # the pods that ended
    prestop_s: float | None = None
    prestop_status: int | None = None

    @property
    def gone_after_s(self) -> float | None:
        return None if self.gone_mono is None else self.gone_mono - self.t0_mono


def app_protocol_env(protocol: str) -> dict[str, str]:
    """The app's environment for a revision port of ``protocol`` ("http1" or "h2c"): on an
    h2c port the fixture apps serve their gRPC form (``PROTOCOL=grpc``, fixtures/apps)."""
    return {"PROTOCOL": "grpc"} if protocol == "h2c" else {}
