"""The kubeconfig of ``--platform=existing``, read before any network call: the file is
there and holds the context the run will use. Raises :class:`KubeconfigError` with the one
line the user sees (options.py turns it into a usage error)."""

from __future__ import annotations

import os
from pathlib import Path


class KubeconfigError(ValueError):
    """The kubeconfig cannot give the run a cluster; the message names the option."""


def kubeconfig_contexts(source: str) -> tuple[list[str], str | None]:
    """(context names, current context) of a kubeconfig, merged as the kubernetes client does."""
    from kubernetes.config.kube_config import KubeConfigMerger

    merged = KubeConfigMerger(source).config
    value = merged.value if merged is not None else None
    if not isinstance(value, dict):
        raise ValueError("no kubeconfig document in it")
    contexts = [getattr(c, "value", c) for c in value.get("contexts") or []]  # ConfigNodes
    names = [str(c["name"]) for c in contexts if isinstance(c, dict) and c.get("name")]
    current = value.get("current-context")
    return names, str(current) if current else None


def check_kubeconfig(kubeconfig: Path | None, context: str | None) -> None:
    """The kubeconfig (``--kubeconfig``, else $KUBECONFIG, else ~/.kube/config) exists, is
    one, and has ``context`` (or a usable current-context)."""
    source = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or "~/.kube/config"
    where = f"--kubeconfig={kubeconfig}" if kubeconfig else f"the default kubeconfig ({source})"
    files = [Path(p).expanduser() for p in source.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        raise KubeconfigError(
            f"--platform=existing: {where}: no such file; give the kubeconfig of the cluster "
            "with --kubeconfig=PATH (or ini key 'kubeconfig')"
        )
    try:
        names, current = kubeconfig_contexts(source)
    except Exception as exc:  # noqa: BLE001  (whatever the file is, it is not a kubeconfig)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KubeconfigError(
            f"--platform=existing: {where} is not a readable kubeconfig ({detail})"
        ) from None
    if not names:
        raise KubeconfigError(
            f"--platform=existing: {where} is not a readable kubeconfig (no contexts in it)"
        )
    listed = ", ".join(names)
    if context is not None and context not in names:
        raise KubeconfigError(
            f"--context={context}: no such context in {where}; contexts there: {listed}"
        )
    if context is None and (current is None or current not in names):
        raise KubeconfigError(
            f"--platform=existing: {where} has no usable current-context "
            f"({current or 'none set'}); give --context, one of: {listed}"
        )
