"""``--platform=local``: Knative revision pods emulated on this machine's Docker engine.

- pod.py: one pod (pause, the real queue-proxy, the app), its timeline and faults;
- kubelet.py: how kubelet stops a pod's containers (preStop, SIGTERM, grace, SIGKILL);
- platform.py: the platform that provisions images and makes pods, and the sweep.

The names users import (``from pytest_knative_drain.platforms.local import LocalPlatform``)
are re-exported here.
"""

from .kubelet import DRAIN_PATH, KUBELET_MIN_GRACE_S, QUEUE_ADMIN_PORT, Kubelet
from .platform import LocalPlatform, sweep
from .pod import (
    LABEL,
    QUEUE_SERVING_PORT,
    QUEUE_SERVING_TLS_PORT,
    READY_TIMEOUT_S,
    LocalPlatformError,
    LocalPod,
    PodStartError,
    RevisionSpec,
)

__all__ = [
    "DRAIN_PATH",
    "KUBELET_MIN_GRACE_S",
    "LABEL",
    "QUEUE_ADMIN_PORT",
    "QUEUE_SERVING_PORT",
    "QUEUE_SERVING_TLS_PORT",
    "READY_TIMEOUT_S",
    "Kubelet",
    "LocalPlatform",
    "LocalPlatformError",
    "LocalPod",
    "PodStartError",
    "RevisionSpec",
    "sweep",
]
