"""Command-line options and ini keys, resolved and validated in one place.

Every option can be given on the command line or as an ini key of the same
name (``knative_version = 1.14``); the command line wins. pytest-kind already
registers ``--kubeconfig``, ``--cluster-name`` and ``--keep-cluster``: we reuse
them and only add ini keys for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import catalog

PLATFORMS = ("kind", "existing", "local")
PROFILES = ("quick", "seed")
KIND_BUILDS = ("auto", "release", "here")
DEFAULT_KNATIVE_VERSION = "1.14"  # the version of knative/serving#15211

# (dest, flag, ini help, default); ``None`` flag means pytest-kind owns the flag.
_OPTIONS: tuple[tuple[str, str | None, str, Any], ...] = (
    (
        "knative_version",
        "--knative-version",
        "Knative Serving version: '1.14' (newest known patch) or exact '1.14.1'.",
        DEFAULT_KNATIVE_VERSION,
    ),
    (
        "platform",
        "--platform",
        f"Where pods run: {', '.join(PLATFORMS)} (local = Docker pod emulation, no cluster).",
        "kind",
    ),
    ("context", "--context", "kubeconfig context for --platform=existing.", None),
    (
        "profile",
        "--profile",
        "quick (compressed, still outlives the 30 s drain quiet period) or "
        "seed (200 requests x 300 s, as in knative/serving#15211).",
        "quick",
    ),
    (
        "app_image",
        "--app-image",
        "Your own app image to judge (serves the fixture contract).",
        None,
    ),
    ("drain_report", "--drain-report", "Write the JSON drain report (and .md) to this path.", None),
    (
        "allow_cluster_config",
        "--allow-cluster-config",
        "--platform=existing: allow scenarios to change cluster-wide Knative ConfigMaps "
        "(old values are restored afterwards).",
        False,
    ),
    (
        "knative_manifests_dir",
        "--knative-manifests-dir",
        "Directory holding serving-crds.yaml, serving-core.yaml and kourier.yaml of the "
        "release (air-gapped clusters); default: download from the release URLs.",
        None,
    ),
    (
        "ingress_port",
        "--ingress-port",
        "Host port on 127.0.0.1 where the cluster's ingress answers: kind maps Kourier's "
        "NodePort there; for --platform=existing forward it yourself (kubectl port-forward "
        "-n kourier-system svc/kourier 31080:80).",
        31080,
    ),
    (
        "app_registry",
        "--app-registry",
        "--platform=existing: the registry the fixture apps were pushed to with "
        "`knative-drain push-apps --registry=...` (REGISTRY/knative-drain-app:<app>).",
        None,
    ),
    (
        "kind_build",
        "--kind-build",
        "--platform=kind: where the node image, Knative and Kourier come from: release "
        "(published images and manifests), here (built on this machine from Debian, the Go "
        "module proxy and PyPI; no registry needed), auto (release, else here).",
        "auto",
    ),
    ("kubeconfig", None, "kubeconfig path (the --kubeconfig flag comes from pytest-kind).", None),
    ("keep_cluster", None, "Keep cluster/containers after the run (pytest-kind's flag).", False),
)


@dataclass(frozen=True)
class DrainOptions:
    """The resolved, validated options of one run."""

    release: catalog.Release
    platform: str
    profile: str
    kubeconfig: Path | None
    context: str | None
    keep: bool
    app_image: str | None
    drain_report: Path | None
    allow_cluster_config: bool = False
    knative_manifests_dir: Path | None = None
    ingress_port: int = 31080
    app_registry: str | None = None
    kind_build: str = "auto"
    #: --knative-version (or the ini key) as given; None when the default applies. An
    #: existing cluster runs what it runs: this only says whether the user asked otherwise.
    knative_version_requested: str | None = None


def add_options(parser: pytest.Parser) -> None:
    """Register the "knative-drain" option group and matching ini keys."""
    group = parser.getgroup("knative-drain", "knative-drain (Knative drain conformance)")
    for dest, flag, help_text, default in _OPTIONS:
        if flag is not None:
            shown = f" Default: {default}." if default is not None else ""
            if isinstance(default, bool):  # a switch: present = on
                group.addoption(flag, dest=dest, action="store_true", default=None, help=help_text)
            else:
                group.addoption(flag, dest=dest, default=None, help=f"{help_text}{shown}")
        ini_type = "bool" if isinstance(default, bool) else "string"
        # No ini default for the version: resolve_options must see whether the user asked.
        ini_default = None if dest == "knative_version" else default
        parser.addini(dest, help_text, type=ini_type, default=ini_default)


def _raw(config: pytest.Config, dest: str) -> Any:
    value = config.getoption(dest, default=None)
    if value in (None, False, ""):
        value = config.getini(dest)
    return value if value not in ("", None) else None


def resolve_options(config: pytest.Config) -> DrainOptions:
    """CLI value, else ini value, else default; bad values raise ``pytest.UsageError``."""
    requested = _raw(config, "knative_version")
    version = str(requested or DEFAULT_KNATIVE_VERSION)
    try:
        release = catalog.resolve(version)
    except catalog.CatalogError as exc:
        raise pytest.UsageError(f"--knative-version={version}: {exc}") from None
    platform = _choice(config, "platform", "--platform", PLATFORMS, "kind")
    profile = _choice(config, "profile", "--profile", PROFILES, "quick")
    kubeconfig = _raw(config, "kubeconfig")
    context = _raw(config, "context")
    if context and platform != "existing":
        raise pytest.UsageError(
            f"--context={context} only applies to --platform=existing (got --platform={platform})"
        )
    report = _raw(config, "drain_report")
    return DrainOptions(
        release=release,
        platform=platform,
        profile=profile,
        kubeconfig=Path(kubeconfig).expanduser() if kubeconfig else None,
        context=context,
        keep=bool(_raw(config, "keep_cluster")),
        app_image=_raw(config, "app_image"),
        drain_report=Path(report) if report else None,
        allow_cluster_config=bool(_raw(config, "allow_cluster_config")),
        knative_manifests_dir=_manifests_dir(config),
        ingress_port=_port(config),
        app_registry=_registry(config, platform),
        kind_build=_choice(config, "kind_build", "--kind-build", KIND_BUILDS, "auto"),
        knative_version_requested=str(requested) if requested else None,
    )


def _registry(config: pytest.Config, platform: str) -> str | None:
    value = _raw(config, "app_registry")
    if value is None:
        return None
    from .images import ImagesError, check_registry

    if platform != "existing":
        raise pytest.UsageError(
            f"--app-registry={value} only applies to --platform=existing (kind loads the "
            "fixture images itself; local runs them on Docker)"
        )
    try:
        return check_registry(str(value))
    except ImagesError as exc:
        raise pytest.UsageError(f"--app-registry={value}: {exc}") from None


def _port(config: pytest.Config) -> int:
    value = str(_raw(config, "ingress_port") or 31080)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise pytest.UsageError(
            f"--ingress-port={value}: a TCP port number, 1 to 65535 (or ini key 'ingress_port')"
        )
    return int(value)


def _manifests_dir(config: pytest.Config) -> Path | None:
    value = _raw(config, "knative_manifests_dir")
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise pytest.UsageError(
            f"--knative-manifests-dir={value}: not a directory; it must hold serving-crds.yaml, "
            "serving-core.yaml and kourier.yaml (or ini key 'knative_manifests_dir')"
        )
    return path


def _choice(
    config: pytest.Config, dest: str, flag: str, accepted: tuple[str, ...], default: str
) -> str:
    value = str(_raw(config, dest) or default)
    if value not in accepted:
        raise pytest.UsageError(
            f"{flag}={value} is not accepted; use one of: {', '.join(accepted)} "
            f"(or ini key '{dest}')"
        )
    return value
