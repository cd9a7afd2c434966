"""Command-line options and ini keys, resolved and validated in one place.

Every option can be given on the command line or as an ini key of the same
name (``knative_version = 1.14``); the command line wins. pytest-kind already
registers ``--kubeconfig``, ``--cluster-name`` and ``--keep-cluster``: we reuse
them and only add ini keys for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from .knative import catalog
from .knative import kubernetes as kube_versions
from .run.scheduler import CLUSTER_CONCURRENCY, KIND_WORKER_CONCURRENCY

PLATFORMS = ("kind", "existing", "local")
PROFILES = ("quick", "seed")
KIND_BUILDS = ("auto", "release", "here")
DEFAULT_KNATIVE_VERSION = "1.14"  # the version of knative/serving#15211
#: --platform=kind maps Kourier's NodePort to this port on 127.0.0.1 unless --ingress-port
DEFAULT_INGRESS_PORT = 31080
#: every option and ini key the plugin registers: (dest, flag, help, default); a ``None``
#: flag means pytest-kind owns the flag. tests/test_options.py tries a bad value for each.
OPTIONS: tuple[tuple[str, str | None, str, Any], ...] = (
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
    (
        "app_strict",
        "--app-strict",
        "With --app-image: refuse an image that does not serve every endpoint the selected "
        "scenarios use (certification runs). Without it, scenarios whose endpoint the image "
        "does not serve (GET /stream, the /ws echo) are skipped, each saying why.",
        False,
    ),
    ("drain_report", "--drain-report", "Write the JSON drain report (and .md) to this path.", None),
    (
        "drain_bundle",
        "--drain-bundle",
        "Write a certification bundle: DIR/ (report, PRODUCT.yaml, JUnit, log, session, "
        "environment, pod logs of failed cases, SHA256SUMS) and DIR.tar.gz; check it with "
        "`knative-drain verify DIR`.",
        None,
    ),
    ("product", "--product", "PRODUCT.yaml of the product --drain-bundle certifies.", None),
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
        f"NodePort there (default {DEFAULT_INGRESS_PORT}); --platform=existing: a port you "
        "forward yourself (kubectl port-forward -n kourier-system svc/kourier 31080:80) "
        "instead of the address read from the cluster.",
        None,
    ),
    (
        "ingress_url",
        "--ingress-url",
        "--platform=existing: http://HOST[:PORT] of the cluster's Knative ingress, sent each "
        "Knative Service's Host header (default: read from the cluster: the gateway "
        "Service's LoadBalancer address, else a node address and its NodePort).",
        None,
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
    (
        "drain_concurrency",
        "--drain-concurrency",
        "How many drain cases run at once: a whole number (1 = one after another), or auto: "
        "every selected case at once on local (each has its own pod), "
        f"{CLUSTER_CONCURRENCY} on kind/existing ({KIND_WORKER_CONCURRENCY} on kind with "
        "--kind-workers: one kind node runs out of CPU to request; the cluster's CPU is shared "
        "by all cases; "
        "cases that change cluster-wide Knative configuration always run alone).",
        "auto",
    ),
    (
        "kubernetes_version",
        "--kubernetes-version",
        "--platform=kind: the Kubernetes of the cluster, a minor (1.34) or a patch "
        "(v1.34.12); default: the newest one the release is tested on that builds here. "
        "Below the release's minimum it is refused.",
        None,
    ),
    (
        "kind_workers",
        "--kind-workers",
        "--platform=kind: worker nodes at least (0-4; scenarios that drain a node ask for "
        "2 themselves). A kind node of a 2-core host has 150m CPU left unrequested: a worker "
        "gives cases at once and the HA tests' second activator somewhere to be scheduled.",
        0,
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
    #: --app-strict: an --app-image must serve every endpoint the selected scenarios use
    app_strict: bool = False
    allow_cluster_config: bool = False
    knative_manifests_dir: Path | None = None
    #: --ingress-port as given; None: kind maps to DEFAULT_INGRESS_PORT, existing reads the
    #: address from the cluster unless --ingress-url
    ingress_port: int | None = None
    #: --ingress-url (existing only), normalised to http://HOST[:PORT]
    ingress_url: str | None = None
    app_registry: str | None = None
    kind_build: str = "auto"
    #: --drain-concurrency: cases at once; None = auto (scheduler.concurrency says how many)
    drain_concurrency: int | None = None
    #: --knative-version (or the ini key) as given; None when the default applies. An
    #: existing cluster runs what it runs: this only says whether the user asked otherwise.
    knative_version_requested: str | None = None
    #: --platform=kind: the Kubernetes its cluster runs (built here) and why; None elsewhere
    kubernetes: kube_versions.KubernetesChoice | None = None
    #: --kind-workers: kind worker nodes at least (the scenarios may ask for more)
    kind_workers: int = 0
    #: why ``release`` is not the newest patch of the minor asked (platforms/release_patch)
    release_substituted: str | None = None
    #: --drain-bundle and --product (evidence/bundle.py)
    drain_bundle: Path | None = None
    product: dict[str, Any] | None = None


def add_options(parser: pytest.Parser) -> None:
    """Register the "knative-drain" option group and matching ini keys."""
    group = parser.getgroup("knative-drain", "knative-drain (Knative drain conformance)")
    for dest, flag, help_text, default in OPTIONS:
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


def flag_of(dest: str) -> str:
    """The command-line flag of option ``dest`` (pytest-kind's own for the keys it owns)."""
    flag = next(f for d, f, *_ in OPTIONS if d == dest)
    return flag or "--" + dest.replace("_", "-")


def _raw(config: pytest.Config, dest: str) -> Any:
    value = config.getoption(dest, default=None)
    if value in (None, False, ""):
        # A bool ini key that is no truth value: pytest >= 9 raises UsageError without the
        # key's name, older ones ValueError. Either way: say which key.
        try:
            value = config.getini(dest)
        except (ValueError, pytest.UsageError) as exc:
            raise pytest.UsageError(
                f"{flag_of(dest)} (ini key '{dest}'): {exc}; use true or false "
                "(also yes/no, on/off, 1/0)"
            ) from None
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
    try:
        release.check_platform(platform)
    except catalog.CatalogError as exc:
        raise pytest.UsageError(f"--knative-version={version}: {exc}") from None
    profile = _choice(config, "profile", "--profile", PROFILES, "quick")
    kubeconfig = _raw(config, "kubeconfig")
    context = _raw(config, "context")
    if context and platform != "existing":
        raise pytest.UsageError(
            f"--context={context} only applies to --platform=existing (got --platform={platform})"
        )
    report = _raw(config, "drain_report")
    kubeconfig_path = Path(str(kubeconfig)).expanduser() if kubeconfig else None
    options = DrainOptions(
        release=release,
        platform=platform,
        profile=profile,
        kubeconfig=kubeconfig_path,
        context=context,
        keep=bool(_raw(config, "keep_cluster")),
        app_image=_app_image(config),
        app_strict=_app_strict(config),
        drain_report=_drain_report(str(report)) if report else None,
        allow_cluster_config=bool(_raw(config, "allow_cluster_config")),
        knative_manifests_dir=_manifests_dir(config),
        ingress_port=_port(config),
        ingress_url=_ingress_url(config, platform),
        app_registry=_registry(config, platform),
        kind_build=_choice(config, "kind_build", "--kind-build", KIND_BUILDS, "auto"),
        drain_concurrency=_concurrency(config),
        knative_version_requested=str(requested) if requested else None,
        kubernetes=_kubernetes(config, release, platform),
        kind_workers=_kind_workers(config, platform),
        **_bundle(config),
    )
    # last: the only check that reads a file the user may not expect us to read
    _check_cluster_access(kubeconfig_path, context, platform)
    return _buildable_patch(options, version)


def _bundle(config: pytest.Config) -> dict[str, Any]:
    """--drain-bundle's directory (checked writable now) and --product's fields."""
    from .evidence.bundle import BundleError, check_destination, read_product

    bundle, product = _raw(config, "drain_bundle"), _raw(config, "product")
    if product and not bundle:
        raise pytest.UsageError(f"--product={product}: only with --drain-bundle=DIR")
    try:
        fields = read_product(Path(str(product)).expanduser()) if product else None
    except BundleError as exc:
        raise pytest.UsageError(f"--product={product}: {exc}") from None
    path = output_dir("--drain-bundle", str(bundle)).absolute() if bundle else None
    try:
        if path is not None:
            check_destination(path)  # it is replaced at the end: never a directory of yours
    except BundleError as exc:
        raise pytest.UsageError(f"--drain-bundle={bundle}: {exc}") from None
    return {"drain_bundle": path, "product": fields}


def _buildable_patch(options: DrainOptions, requested: str) -> DrainOptions:
    """Where Knative is built here, a minor runs its newest patch the module proxy serves."""
    builds = options.platform == "local" or (
        options.platform == "kind"
        and options.kind_build != "release"
        and options.knative_manifests_dir is None
    )
    if not builds:
        return options
    from .platforms.release_patch import buildable

    choice = buildable(options.release, requested)
    if choice.substituted is None:
        return options
    return replace(options, release=choice.release, release_substituted=choice.substituted)


def _kubernetes(
    config: pytest.Config, release: catalog.Release, platform: str
) -> kube_versions.KubernetesChoice | None:
    """kind's Kubernetes: asked, else the release's default; refused below its minimum."""
    asked = _raw(config, "kubernetes_version")
    if platform != "kind":
        if asked is not None:
            raise pytest.UsageError(
                f"--kubernetes-version={asked} only applies to --platform=kind (an existing "
                "cluster runs its own; local has no Kubernetes)"
            )
        return None
    try:
        return kube_versions.resolve(release, None if asked is None else str(asked))
    except kube_versions.KubernetesVersionError as exc:
        raise pytest.UsageError(f"{exc} (or ini key 'kubernetes_version')") from None


def _kind_workers(config: pytest.Config, platform: str) -> int:
    value = str(_raw(config, "kind_workers") or "0").strip()
    if not (value.isascii() and value.isdigit()) or int(value) > 4:
        raise pytest.UsageError(
            f"--kind-workers={value}: a whole number of worker nodes, 0 to 4 "
            "(or ini key 'kind_workers')"
        )
    if int(value) and platform != "kind":
        raise pytest.UsageError(
            f"--kind-workers={value} only applies to --platform=kind (got --platform={platform})"
        )
    return int(value)


def _registry(config: pytest.Config, platform: str) -> str | None:
    value = _raw(config, "app_registry")
    if value is None:
        return None
    from .builders.images import ImagesError, check_registry

    if platform != "existing":
        raise pytest.UsageError(
            f"--app-registry={value} only applies to --platform=existing (kind loads the "
            "fixture images itself; local runs them on Docker)"
        )
    try:
        return check_registry(str(value))
    except ImagesError as exc:
        raise pytest.UsageError(f"--app-registry={value}: {exc}") from None


def _port(config: pytest.Config) -> int | None:
    raw = _raw(config, "ingress_port")
    if raw is None:
        return None
    value = str(raw).strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
        raise pytest.UsageError(
            f"--ingress-port={value}: a TCP port number, 1 to 65535 (or ini key 'ingress_port')"
        )
    return int(value)


def _ingress_url(config: pytest.Config, platform: str) -> str | None:
    """--ingress-url: existing clusters only, one of it and --ingress-port, http only."""
    value = _raw(config, "ingress_url")
    if value is None:
        return None
    from .platforms.cluster.ingress import parse_ingress_url

    if platform != "existing":
        raise pytest.UsageError(
            f"--ingress-url={value} only applies to --platform=existing (kind maps its "
            "ingress to 127.0.0.1:--ingress-port; local has none)"
        )
    if _raw(config, "ingress_port") is not None:
        raise pytest.UsageError(
            f"--ingress-url={value} and --ingress-port: give one (--ingress-port=N means "
            "http://127.0.0.1:N)"
        )
    try:
        return parse_ingress_url(str(value))
    except ValueError as exc:
        raise pytest.UsageError(
            f"--ingress-url={value}: {exc} (or ini key 'ingress_url')"
        ) from None


def _concurrency(config: pytest.Config) -> int | None:
    value = str(_raw(config, "drain_concurrency") or "auto").strip()
    if value == "auto":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise pytest.UsageError(
            f"--drain-concurrency={value}: a whole number >= 1 (1 = one case after another) or "
            f"auto (every case at once on local, {CLUSTER_CONCURRENCY} on kind/existing, "
            f"{KIND_WORKER_CONCURRENCY} on kind with --kind-workers) "
            "(or ini key 'drain_concurrency')"
        )
    return int(value)


def _manifests_dir(config: pytest.Config) -> Path | None:
    value = _raw(config, "knative_manifests_dir")
    if value is None:
        return None
    from .knative.manifests import MANIFESTS

    path = Path(str(value)).expanduser()
    needed = ", ".join(f"{name}.yaml" for name in MANIFESTS)
    if not path.is_dir():
        raise pytest.UsageError(
            f"--knative-manifests-dir={value}: not a directory; it must hold {needed} "
            "(or ini key 'knative_manifests_dir')"
        )
    missing = [f"{name}.yaml" for name in MANIFESTS if not (path / f"{name}.yaml").is_file()]
    if missing:
        raise pytest.UsageError(
            f"--knative-manifests-dir={value}: {', '.join(missing)} missing; it must hold "
            f"{needed} (or ini key 'knative_manifests_dir')"
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


def _app_strict(config: pytest.Config) -> bool:
    strict = bool(_raw(config, "app_strict"))
    if strict and not _raw(config, "app_image"):
        raise pytest.UsageError(
            "--app-strict (ini key 'app_strict') judges your own image: give --app-image=IMAGE "
            "too (the fixture apps always serve every endpoint)"
        )
    return strict


def _app_image(config: pytest.Config) -> str | None:
    value = _raw(config, "app_image")
    if value is None:
        return None
    from .builders.image_reference import check_image_reference

    try:
        return check_image_reference(str(value))
    except ValueError as exc:
        raise pytest.UsageError(f"--app-image={value}: {exc} (or ini key 'app_image')") from None


def _drain_report(value: str) -> Path:
    path = output_file("--drain-report", value)
    if path.suffix == ".md":
        raise pytest.UsageError(
            f"--drain-report={value}: the markdown rendering goes beside the JSON as .md; "
            "give the JSON path, e.g. run.json (or ini key 'drain_report')"
        )
    output_file("--drain-report", str(path.with_suffix(".md")))
    return path.absolute()  # written at the end: where it was meant, whatever the cwd then


def output_file(flag: str, value: str) -> Path:
    """A file path the run can write at its end, checked now so no result is lost then."""
    from .evidence.writable import NotWritable, check_file

    path = Path(value).expanduser()
    try:
        check_file(path)
    except NotWritable as exc:
        raise pytest.UsageError(f"{flag}={value}: {exc}; give a path you can write") from None
    return path


def output_dir(flag: str, value: str) -> Path:
    """A directory path the run can create (or that exists) and write into."""
    from .evidence.writable import NotWritable, check_directory

    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{flag}={value}: is a file; give a directory path")
    try:
        check_directory(path)
    except NotWritable as exc:
        raise pytest.UsageError(f"{flag}={value}: {exc}; give a path you can write") from None
    return path


def check_evidence_paths(config: pytest.Config) -> None:
    """Other plugins' report paths (JUnit XML, allure), checked before any platform comes up.

    pytest and allure only create them at the end (or mid-configure), where a bad path is
    a traceback after the run.
    """
    xmlpath = getattr(config.option, "xmlpath", None)
    if xmlpath and not hasattr(config, "workerinput"):
        output_file("--junitxml", str(xmlpath))
    alluredir = getattr(config.option, "allure_report_dir", None)
    if alluredir:
        output_dir("--alluredir", str(alluredir))


def _check_cluster_access(kubeconfig: Path | None, context: str | None, platform: str) -> None:
    """``--platform=existing``: the kubeconfig is there and holds the context (no network)."""
    if platform != "existing":
        if platform == "kind" and kubeconfig is not None:  # kind writes it at create
            output_file("--kubeconfig", str(kubeconfig))
        return
    from .platforms.cluster.kubeconfig import KubeconfigError, check_kubeconfig

    try:
        check_kubeconfig(kubeconfig, context)
    except KubeconfigError as exc:
        raise pytest.UsageError(str(exc)) from None
