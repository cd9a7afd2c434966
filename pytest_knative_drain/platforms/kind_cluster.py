"""The kind command with a time bound on every call, and pod networking for its nodes.

The kind CLI is the library here; this module only bounds it. pytest-kind (used before)
runs ``kind create/load/delete`` with no timeout (a stuck Docker hung the session),
writes ``.pytest-kind/`` into the working directory and downloads kind from GitHub.

Pod networking: kind's default CNI is kindnetd, an image the module proxy here does not
serve, so clusters are made with ``disableDefaultCNI`` and :func:`install_pod_network`
does what kindnetd does, once, from outside: each node gets a ptp + host-local CNI
configuration for its pod CIDR and a route to every other node's pod CIDR via that
node's address on kind's Docker network (all nodes share one L2 segment).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed
from urllib3.exceptions import HTTPError as Urllib3Error

from .cluster.api import ClusterError

Progress = Callable[[str], None]
CREATE_TIMEOUT_S = 600.0
DELETE_TIMEOUT_S = 180.0
LOAD_TIMEOUT_S = 600.0
CNI_CONFIG = "/etc/cni/net.d/10-knative-drain.conflist"


@dataclass
class KindCluster:
    """One named kind cluster, driven through the kind binary at ``kind``."""

    kind: Path
    name: str
    kubeconfig: Path | None = None  # None: kind's own default ($KUBECONFIG, ~/.kube/config)

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    def _run(self, args: list[str], timeout_s: float, what: str) -> str:
        try:
            done = subprocess.run(
                [str(self.kind), *args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                # not in pytest's process group: a second Ctrl-C (or a group SIGTERM) must not
                # kill `kind delete cluster`; on a signal pytest kills kind itself (host/signals.py)
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{what}: no answer from kind within {timeout_s:.0f} s") from None
        except OSError as exc:
            raise ClusterError(f"{what}: cannot run {self.kind}: {exc}") from None
        if done.returncode != 0:
            raise ClusterError(
                f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-1200:]}"
            )
        return done.stdout

    def exists(self) -> bool:
        out = self._run(["get", "clusters"], 60, "kind get clusters")
        return self.name in out.split()

    def nodes(self) -> list[str]:
        return self._run(["get", "nodes", "--name", self.name], 60, "kind get nodes").split()

    def create(self, config: Path, image: str | None = None) -> None:
        args = ["create", "cluster", "--name", self.name, *self._kubeconfig_args()]
        args += ["--config", str(config), "--retain"]
        if image:
            args += ["--image", image]
        try:
            self._run(args, CREATE_TIMEOUT_S, f"kind create cluster {self.name}")
        except ClusterError as exc:  # --retain keeps the nodes for the logs; then delete
            logs = self.export_logs()
            with contextlib.suppress(ClusterError):  # the create error is the one to report
                self.delete()
            raise ClusterError(f"{exc}{f' (node logs: {logs})' if logs else ''}") from None

    def export_logs(self) -> str | None:
        """``kind export logs`` into a temp dir (for a failed create); its path or None."""
        import tempfile

        where = tempfile.mkdtemp(prefix=f"knative-drain-kind-logs-{self.name}-")
        try:
            self._run(["export", "logs", where, "--name", self.name], 180, "kind export logs")
        except ClusterError:
            shutil.rmtree(where, ignore_errors=True)
            return None
        return where

    def _kubeconfig_args(self) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []

    def export_kubeconfig(self) -> None:
        args = ["export", "kubeconfig", "--name", self.name, *self._kubeconfig_args()]
        self._run(args, 60, "kind export kubeconfig")

    def node_address(self) -> str:
        """The control-plane node's address on kind's Docker network (Knative's kind CI
        points its tests there, ``-ingressendpoint``, with the gateway's NodePort)."""
        node = f"{self.name}-control-plane"
        try:
            done = subprocess.run(
                ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", node],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"docker inspect {node}: {exc}") from None
        if done.returncode != 0:
            raise ClusterError(f"docker inspect {node}: {done.stderr.strip()[-300:]}")
        address = (json.loads(done.stdout).get("kind") or {}).get("IPAddress")
        if not address:
            raise ClusterError(f"node {node} has no address on the Docker network 'kind'")
        return str(address)

    def load_image(self, ref: str) -> None:
        self._run(
            ["load", "docker-image", "--name", self.name, ref],
            LOAD_TIMEOUT_S,
            f"kind load docker-image {ref}",
        )

    def delete(self) -> None:
        self._run(
            ["delete", "cluster", "--name", self.name, *self._kubeconfig_args()],
            DELETE_TIMEOUT_S,
            f"kind delete cluster {self.name}",
        )


def _docker_exec(node: str, script: str, stdin: str | None = None) -> str:
    try:
        done = _exec(node, script, stdin)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"pod network on node {node}: docker exec timed out") from None
    if done.returncode != 0:
        raise ClusterError(f"pod network on node {node}: {done.stderr.strip()[-400:]}")
    return done.stdout


def _exec(node: str, script: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", "-i", node, "sh", "-euc", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cni_config(pod_cidr: str) -> str:
    """ptp + host-local for one node's pod CIDR, portmap for hostPort."""
    return json.dumps(
        {
            "cniVersion": "0.3.1",
            "name": "knative-drain",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "mtu": 1500,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": "/run/cni-ipam-state",
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": pod_cidr}]],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def install_pod_network(api: k8s.ApiClient, progress: Progress, timeout_s: float = 120) -> None:
    """CNI config and inter-node routes on every node, then wait until all are Ready."""
    core = k8s.CoreV1Api(api)

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(2),
        retry=retry_if_exception_type((ClusterError, ApiException, Urllib3Error)),
    )
    def node_cidrs() -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for node in core.list_node(_request_timeout=15).items:
            address = next(
                (a.address for a in node.status.addresses or [] if a.type == "InternalIP"), None
            )
            if not node.spec.pod_cidr or not address:
                raise ClusterError(f"node {node.metadata.name} has no pod CIDR or address yet")
            found[node.metadata.name] = (node.spec.pod_cidr, address)
        return found

    try:
        nodes = node_cidrs()
    except RetryError as exc:
        raise ClusterError(f"pod network: {exc.last_attempt.exception()}") from None
    for name, (cidr, _address) in nodes.items():
        routes = "".join(
            f"ip route replace {other_cidr} via {other_ip}\n"
            for other, (other_cidr, other_ip) in nodes.items()
            if other != name
        )
        _docker_exec(
            name, f"mkdir -p /etc/cni/net.d && cat > {CNI_CONFIG}\n{routes}", stdin=cni_config(cidr)
        )
        progress(f"pod network: {name} {cidr}, routes to {len(nodes) - 1} other node(s)")

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(2),
        retry=retry_if_exception_type((ClusterError, ApiException, Urllib3Error)),
    )
    def all_ready() -> None:
        for node in core.list_node(_request_timeout=15).items:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            )
            if not ready:
                raise ClusterError(f"node {node.metadata.name} is not Ready")

    try:
        all_ready()
    except RetryError as exc:
        raise ClusterError(f"pod network: {exc.last_attempt.exception()}") from None
