"""``knative-drain cleanup``: remove what kept or interrupted runs left behind.

Kept on purpose by ``--keep-cluster`` / ``--keep`` or left by a run killed with SIGKILL:
kind clusters named ``<prefix>`` or ``<prefix>-...``, the containers of the local platform
and of node-image builds (label ``knative-drain.run``), and the namespaces runs made (same
label) in the current kubeconfig context. Nothing without our name or label goes; run it
when no run is in progress (a live run's namespace and containers carry the label too).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

from ..host.docker_engine import engine_answers, state_dir
from .cluster.api import RUN_LABEL


def _kind_binary() -> Path | None:
    """A kind this project built (any version: Kubernetes 1.34 needs kind v0.30, 1.31 ran
    on v0.24), else kind on PATH. Looking for v0.24 only, cleanup found no kind on a machine
    that had built v0.30 alone, left every cluster to the container sweep below, and the
    nodes' /var volumes behind: 14 of them, 45.9 GB, filled the disk (2026-12-07)."""
    import shutil

    def version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name.removeprefix("kind-v").split(".")
        return tuple(int(d) for d in digits if d.isdigit())

    built = sorted((state_dir() / "bin").glob("kind-v*/kind"), key=version, reverse=True)
    if built:
        return built[0]
    on_path = shutil.which("kind")
    return Path(on_path) if on_path else None


def remove_container(container: Any) -> None:
    """Remove ``container`` with its anonymous volumes (a kind node's /var holds its images:
    about 3 GB a node)."""
    container.remove(force=True, v=True)


def _kind_clusters(kind: Path) -> list[str]:
    done = subprocess.run(
        [str(kind), "get", "clusters"], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.split() if done.returncode == 0 else []


def _namespaces(kubeconfig: Path | None, context: str | None) -> list[tuple[object, str]]:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    try:
        api = k8s_config.new_client_from_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
        listed = k8s.CoreV1Api(api).list_namespace(label_selector=RUN_LABEL, _request_timeout=10)
    except Exception:  # noqa: BLE001 - no kubeconfig, unreachable cluster: nothing to clean
        return []
    return [(api, ns.metadata.name) for ns in listed.items if ns.status.phase != "Terminating"]


def cleanup(cluster_prefix: str = "knative-drain", dry_run: bool = False) -> list[str]:
    """Remove (or with ``dry_run`` only list) leftovers; one line per thing."""
    from kubernetes import client as k8s

    done: list[str] = []
    kind = _kind_binary()
    clusters = [
        c
        for c in (_kind_clusters(kind) if kind else [])
        if c == cluster_prefix or c.startswith(f"{cluster_prefix}-")
    ]
    for api, ns in _namespaces(None, None):
        done.append(f"namespace {ns} (current context)")
        if not dry_run:
            with contextlib.suppress(Exception):
                k8s.CoreV1Api(api).delete_namespace(ns, _request_timeout=10)
    for cluster in clusters:
        done.append(f"kind cluster {cluster}")
        if not dry_run and kind is not None:
            subprocess.run(
                [str(kind), "delete", "cluster", "--name", cluster],
                capture_output=True,
                timeout=180,
                check=False,
            )
    if engine_answers():
        import docker

        client = docker.from_env(timeout=30)
        try:
            for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
                done.append(f"container {container.name}")
                if not dry_run:
                    with contextlib.suppress(docker.errors.APIError):
                        remove_container(container)
        finally:
            client.close()
    return done
