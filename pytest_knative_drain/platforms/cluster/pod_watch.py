"""The pod timeline on a cluster: a watch on a thread turning pod changes into events.

What kubelet and the API server did to a revision's pods (phase, readiness, the
deletionTimestamp, each container's state and exit code) becomes ``PodEvent``s in the
same words the local platform writes, so the verdict reads both timelines alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from ..pod import FINISHED_AT, PodEvent
from .api import REQUEST_TIMEOUT, api_call, cluster_error, host_of

SIGKILL_EXIT = 137  # 128 + 9: what kubelet reports for a container killed at grace end
#: 137s that are no kill at the end of a grace period: the kernel's OOM killer, and a
#: container that never ran (its pod deleted while Pending: kubelet cannot say how it ended;
#: kind, 1.10.4, rollout-long 2026-12-08: two such pods made a drain-clean app "SIGKILLed")
NOT_A_GRACE_KILL = ("OOMKilled", "ContainerStatusUnknown")


def sigkilled(detail: str) -> bool:
    """Whether an exit, as the watch words it ("exit code 137 (Error) after SIGKILL, ..."),
    was a SIGKILL at the end of the grace period."""
    if not detail.startswith(f"exit code {SIGKILL_EXIT}"):
        return False
    return not any(f"({reason})" in detail for reason in NOT_A_GRACE_KILL)


def pod_ready(pod: k8s.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _container_states(pod: k8s.V1Pod) -> dict[str, tuple[str, str, bool]]:
    """container name -> (state, detail, ready)."""
    out: dict[str, tuple[str, str, bool]] = {}
    for status in (pod.status.container_statuses if pod.status else None) or []:
        state = status.state
        if state is None:
            continue
        if state.terminated is not None:
            # "exited", as on --platform=local: the verdict reads both timelines alike
            out[status.name] = ("exited", _exit_detail(state.terminated), bool(status.ready))
        elif state.running is not None:
            out[status.name] = ("running", "", bool(status.ready))
        elif state.waiting is not None:
            out[status.name] = ("waiting", state.waiting.reason or "", bool(status.ready))
    return out


def _exit_detail(t: k8s.V1ContainerStateTerminated) -> str:
    detail = f"exit code {t.exit_code}" + (f" ({t.reason})" if t.reason else "")
    if t.exit_code == SIGKILL_EXIT and t.reason not in NOT_A_GRACE_KILL:
        detail += " after SIGKILL"
    if t.finished_at is not None:
        detail += f", finishedAt {t.finished_at:%H:%M:%S}"
    return detail


def _restarts(pod: k8s.V1Pod) -> dict[str, tuple[int, str]]:
    """container name -> (restartCount, how its previous instance ended: lastState)."""
    out: dict[str, tuple[int, str]] = {}
    for status in (pod.status.container_statuses if pod.status else None) or []:
        last = status.last_state.terminated if status.last_state is not None else None
        out[status.name] = (status.restart_count or 0, _exit_detail(last) if last else "")
    return out


def restart_changes(old: k8s.V1Pod, new: k8s.V1Pod) -> list[tuple[str, str]]:
    """A container kubelet restarted between two observations (a failed liveness probe):
    its previous instance's exit, when lastState first shows it (unless already seen as the
    current state; kubelet may report the new start before it), and, once the new instance
    runs, its start, in the local platform's words."""
    changes: list[tuple[str, str]] = []
    before, now = _restarts(old), _restarts(new)
    was, state = _container_states(old), _container_states(new)
    for name, (count, last_exit) in sorted(now.items()):
        prev_count, prev_exit = before.get(name, (count, last_exit))
        if last_exit and last_exit != prev_exit and was.get(name, ("",))[0] != "exited":
            changes.append((f"{name} exited", last_exit))
        running_now = state.get(name, ("",))[0] == "running"
        restarted = count > prev_count
        # its start: in the same observation, or after a wait (exited, back-off) seen before
        if (
            running_now
            and count
            and (restarted or was.get(name, ("",))[0] in ("exited", "waiting"))
        ):
            changes.append((f"started {name}", f"restartCount {count}"))
    return changes


def pod_changes(old: k8s.V1Pod | None, new: k8s.V1Pod, kind: str) -> list[tuple[str, str]]:
    """(event name, detail) for what changed between two observations of one pod.

    ``kind`` is the watch event type (ADDED, MODIFIED, DELETED).
    """
    if kind == "DELETED":
        return [("gone", "pod object removed from the API server")]
    changes: list[tuple[str, str]] = []
    if old is None:
        changes.append(("observed", f"phase {new.status.phase if new.status else None}"))
    old_phase = old.status.phase if old is not None and old.status else None
    new_phase = new.status.phase if new.status else None
    if old is not None and new_phase != old_phase:
        changes.append((f"phase {new_phase}", f"was {old_phase}"))
    if (old is None and pod_ready(new)) or (old is not None and pod_ready(old) != pod_ready(new)):
        changes.append(("ready" if pod_ready(new) else "not ready", "pod condition Ready"))
    if new.metadata.deletion_timestamp is not None and (
        old is None or old.metadata.deletion_timestamp is None
    ):
        grace = new.metadata.deletion_grace_period_seconds
        changes.append(
            (
                "deletionTimestamp set",
                f"deletionGracePeriodSeconds={grace}, at {new.metadata.deletion_timestamp}",
            )
        )
    if old is not None:
        changes += restart_changes(old, new)
    before = _container_states(old) if old is not None else {}
    started = {c[0].removeprefix("started ") for c in changes if c[0].startswith("started ")}
    for name, (state, detail, ready) in sorted(_container_states(new).items()):
        prev = before.get(name)
        if name in started and state == "running":
            pass  # said as "started <name>" (a restart)
        elif prev is None or prev[0] != state or (state == "exited" and prev[1] != detail):
            changes.append((f"{name} {state}", detail))
        if prev is not None and prev[2] != ready:
            changes.append((f"{name} {'ready' if ready else 'not ready'}", ""))
    return changes


def at_finished_time(event: PodEvent) -> PodEvent:
    """A container's exit stamped at kubelet's ``finishedAt``, not when the watch saw it.

    kubelet reports a pod's container ends together, seconds after they happen (a pod
    status update); the verdict reads cuts against when each container really ended.
    ``finishedAt`` has whole seconds: the stamp is at most 1 s early, never later than
    the observation. As the local platform stamps Docker's own FinishedAt.
    """
    found = FINISHED_AT.search(event.detail) if event.name.endswith(" exited") else None
    if found is None:
        return event
    seen = dt.datetime.fromtimestamp(event.wall, dt.timezone.utc)
    h, m, s = (int(x) for x in found.groups())
    finished = seen.replace(hour=h, minute=m, second=s, microsecond=0)
    if finished > seen:  # the exit was before midnight, the observation after it
        finished -= dt.timedelta(days=1)
    ago = (seen - finished).total_seconds()
    if ago <= 0 or ago > 3600:  # clocks disagree: keep the observation's time
        return event
    return dataclasses.replace(event, mono=event.mono - ago, wall=event.wall - ago)


class PodWatch:
    """Watches the pods matching ``selector`` in ``namespace`` on a thread; records events.

    Each watch request is bounded (``timeout_seconds``) and resumed from the last
    resourceVersion until ``stop()``; a 410 Gone restarts from a fresh list.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        selector: str,
        *,
        request_timeout_s: int = 5,
    ) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.request_timeout_s = request_timeout_s
        self.events: list[PodEvent] = []
        self.errors: list[str] = []
        self.gone: set[str] = set()
        self._last: dict[str, k8s.V1Pod] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._version = ""
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)

    def start(self) -> PodWatch:
        """List (so nothing before the watch is missed), then watch from that version.

        An API server that cannot be reached or refuses the list is a ClusterError here;
        once running, the watch records errors in ``errors`` and keeps trying.
        """
        with api_call(f"list pods {self.selector} in {self.namespace}", self.api):
            self._version = self._list()
        self._thread.start()
        return self

    def _list(self) -> str:
        listed = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, _request_timeout=REQUEST_TIMEOUT
        )
        for pod in listed.items:
            self._observe("ADDED", pod)
        return listed.metadata.resource_version or ""

    def stop(self) -> None:
        """End the watch (bounded: the current request ends within its timeout)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(self.request_timeout_s + 5)

    def _record(self, pod: str, name: str, detail: str) -> None:
        event = PodEvent(pod, name, time.monotonic(), time.time(), detail)
        self.events.append(at_finished_time(event))

    def _run(self) -> None:
        version = self._version
        while not self._stop.is_set():
            self._watch = k8s_watch.Watch()
            try:
                kwargs: dict[str, Any] = {
                    "label_selector": self.selector,
                    "timeout_seconds": self.request_timeout_s,
                    "_request_timeout": self.request_timeout_s + 10,
                    "allow_watch_bookmarks": False,
                }
                if not version:
                    version = self._list()
                kwargs["resource_version"] = version
                for item in self._watch.stream(
                    self.core.list_namespaced_pod, self.namespace, **kwargs
                ):
                    if item["type"] == "ERROR":  # a Status the client did not raise for
                        self.errors.append(f"watch: {item.get('raw_object')}")
                        version = ""
                        break
                    pod: k8s.V1Pod = item["object"]
                    version = pod.metadata.resource_version or version
                    self._observe(item["type"], pod)
                    if self._stop.is_set():
                        break
                version = self._watch.resource_version or version
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    version = ""
                    continue
                self.errors.append(str(cluster_error("watch", exc, host_of(self.api))))
                self._stop.wait(1)
            except (Urllib3Error, OSError) as exc:
                self.errors.append(str(cluster_error("watch", exc, host_of(self.api))))
                self._stop.wait(1)

    def _observe(self, kind: str, pod: k8s.V1Pod) -> None:
        name = pod.metadata.name
        with self._changed:
            for event, detail in pod_changes(self._last.get(name), pod, kind):
                self._record(name, event, detail)
            if kind == "DELETED":
                self.gone.add(name)
                self._last.pop(name, None)
            else:
                self._last[name] = pod
            self._changed.notify_all()

    def last(self, name: str) -> k8s.V1Pod | None:
        """The latest observation of pod ``name`` (None before the first or after gone)."""
        with self._lock:
            return self._last.get(name)

    def wait_gone(self, name: str, timeout_s: float) -> bool:
        """True once the watch saw pod ``name`` deleted, False after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        with self._changed:
            while name not in self.gone:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True
