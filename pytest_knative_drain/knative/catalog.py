"""Knative Serving releases this suite can target, as pinned data.

One place answers "which manifests, which Go module, which kind node image" for a
``--knative-version`` value, so every platform installs and builds the same thing.

Where the data came from (checked 2026-11-24; mirrors fetched that day):

* Serving patches and dates: annotated tags ``knative-v1.X.Y`` in github.com/knative/serving
  (mirror HEAD 2026-08-21, so a patch tagged after that date is not listed). The date is the
  tag's creation date (UTC). ``knative-v1.19.3`` and ``knative-v1.19.4`` point at the same
  commit (152f628f); both tags exist and are listed.
* Go module: ``knative.dev/serving`` tag ``v0.(X+27).Y`` is the same commit as
  ``knative-v1.X.Y`` for every release below (compared with ``git rev-parse``); the Go
  proxy's ``v0.41.2.info`` names commit 3049d814, the commit of ``knative-v1.14.2``.
* Minimum Kubernetes: ``defaultMinimumVersion`` / ``DefaultKubernetesMinVersion`` in
  knative/pkg ``version/version.go`` at the knative.dev/pkg commit each serving tag's
  go.mod requires (every patch of a minor agrees).
* Kourier: tags ``knative-v1.X.Y`` in github.com/knative-extensions/net-kourier (mirror
  HEAD 2026-07-28). Its patch numbers are its own (1.14 has only ``knative-v1.14.0``);
  we pair each serving release with the newest kourier patch of the same minor.
* kind node images: the image kn-plugin-quickstart pins in ``pkg/kind/kind.go`` at its
  tag of the same minor (``kubernetesVersion``), replaced where that image is older than
  the minimum Kubernetes (1.19, 1.21, 1.22; reasons on each entry). Images are pinned by
  digest because kind's release notes say only the ``@sha256`` form guarantees an image
  built for that kind release; the digests are the ones kind's own
  ``pkg/apis/config/defaults/image.go`` or its release notes (mirrored in
  kubernetes-sigs/cluster-api ``test/infrastructure/kind/mapper.go``) list, and the
  minimum kind is the kind release that built the image. That is sometimes newer than
  quickstart's ``kindVersion`` recommendation (1.14: the v1.28.7 image comes from kind
  v0.22.0, quickstart recommends 0.20).
* Releases below 1.10 (checked 2026-12-01) are local-platform only: the cluster platforms
  keep their minimum of 1.10 (no node image, Kourier or install path is pinned for them).
  They are here so a known Knative drain bug can be replayed on the real queue-proxy
  (``known_failures``). Tag dates from the same mirror; minimum Kubernetes from knative/pkg
  at the commit each ``.0`` pins. Module versions the Go proxy here refuses (probed
  2026-12-01: v0.28.1, v0.28.3, v0.29.1-4, v0.30.1-2, v0.32.1, v0.33.1-3, v0.34.3,
  v0.35.2, v0.35.4-6) are listed anyway: building them fails naming the module version.
* Manifest URLs: kn-plugin-quickstart ``pkg/install/install.go`` (``serving-crds.yaml``,
  ``serving-core.yaml`` from knative/serving releases, ``kourier.yaml`` from net-kourier
  releases; the old knative-sandbox path redirects to knative-extensions).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

SERVING_RELEASES = "https://github.com/knative/serving/releases/download"
KOURIER_RELEASES = "https://github.com/knative-extensions/net-kourier/releases/download"
CHECKED = "2026-11-24"


class CatalogError(ValueError):
    """A version string that names no release in the catalog (message lists accepted values)."""


@dataclass(frozen=True)
class Release:
    """One Knative Serving patch release and everything pinned to install or build it."""

    version: str  # "1.14.2"
    min_kubernetes: str  # "1.28"
    kourier_version: str  # "1.14.0": newest net-kourier patch of the same minor
    kind_node_image: str  # "kindest/node:v1.28.7@sha256:..."
    min_kind_version: str  # "0.22.0": the kind release that built kind_node_image
    released: str | None  # ISO date of the serving tag, None if unknown
    node_image_reason: str  # why this node image for this minor
    platforms: tuple[str, ...] = ("local", "kind", "existing")  # where it can be installed

    @property
    def minor(self) -> str:
        """``"1.14"`` for ``"1.14.2"``."""
        return self.version.rsplit(".", 1)[0]

    @property
    def tag(self) -> str:
        """Git tag and release name in knative/serving: ``knative-v1.14.2``."""
        return f"knative-v{self.version}"

    @property
    def go_module_version(self) -> str:
        """``knative.dev/serving`` module version: Knative 1.X.Y is ``v0.(X+27).Y``."""
        major, minor, patch = (int(p) for p in self.version.split("."))
        return f"v0.{minor + 27}.{patch}"

    @property
    def kourier_tag(self) -> str:
        """Git tag and release name in knative-extensions/net-kourier."""
        return f"knative-v{self.kourier_version}"

    @property
    def kind_node_kubernetes(self) -> str:
        """Kubernetes version inside the kind node image (``"1.28.7"``)."""
        return self.kind_node_image.split(":v", 1)[1].split("@", 1)[0]

    @property
    def serving_crds_url(self) -> str:
        """CRDs manifest; applied first, then wait for the CRDs to be Established."""
        return f"{SERVING_RELEASES}/{self.tag}/serving-crds.yaml"

    @property
    def serving_core_url(self) -> str:
        """Serving control plane (activator, autoscaler, controller, webhook)."""
        return f"{SERVING_RELEASES}/{self.tag}/serving-core.yaml"

    @property
    def kourier_url(self) -> str:
        """Kourier ingress (gateway in kourier-system, controller in knative-serving)."""
        return f"{KOURIER_RELEASES}/{self.kourier_tag}/kourier.yaml"

    def manifest_urls(self) -> dict[str, str]:
        """Manifest file name -> release URL, in apply order."""
        return {
            "serving-crds.yaml": self.serving_crds_url,
            "serving-core.yaml": self.serving_core_url,
            "kourier.yaml": self.kourier_url,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data for reports: stored fields plus the derived ones."""
        data = asdict(self)
        data.update(
            minor=self.minor,
            tag=self.tag,
            go_module="knative.dev/serving",
            go_module_version=self.go_module_version,
            platforms=list(self.platforms),
        )
        if self.on_clusters:
            data.update(
                kourier_tag=self.kourier_tag,
                kind_node_kubernetes=self.kind_node_kubernetes,
                manifests=self.manifest_urls(),
            )
        return data

    @property
    def on_clusters(self) -> bool:
        """Whether kind/existing can install it (else: local platform only)."""
        return "kind" in self.platforms

    def check_platform(self, platform: str) -> None:
        """CatalogError naming the platforms this release runs on, if ``platform`` is not one."""
        if platform not in self.platforms:
            raise CatalogError(
                f"Knative {self.version} runs on --platform={' or '.join(self.platforms)} only "
                f"(the cluster platforms start at {minors('kind')[0]}: no node image, "
                "Kourier or install path is pinned below it)"
            )


@dataclass(frozen=True)
class _Minor:
    min_kubernetes: str
    kourier: str
    node: str  # key of _NODE_IMAGES
    reason: str
    dates: str  # tag dates of patches .0, .1, ... separated by spaces


# kind node image -> (sha256 digest, kind release that built it). The digests are the ones
# the kind release lists: "default" = pkg/apis/config/defaults/image.go at that kind tag,
# "notes" = "Images pre-built for this release" in its release notes.
_NODE_IMAGES: dict[str, tuple[str, str]] = {
    "v1.25.3": ("f52781bc0d7a19fb6c405c2af83abfeb311f130707a0e219175677e366cc45d1", "0.17.0"),
    "v1.26.6": ("6e2d8b28a5b601defe327b98bd1c2d1930b49e5d8c512e1895099e4504007adb", "0.20.0"),
    "v1.27.3": ("3966ac761ae0136263ffdb6cfd4db23ef8a83cba8a463690e98317add2c9ba72", "0.20.0"),
    "v1.28.7": ("9bc6c451a289cf96ad0bbaf33d416901de6fd632415b076ab05f5fa7e4f65c58", "0.22.0"),
    "v1.30.0": ("047357ac0cfea04663786a612ba1eaba9702bef25227a794b52890dd8bcd692e", "0.23.0"),
    "v1.31.6": ("28b7cbb993dfe093c76641a0c95807637213c9109b761f1d422c2400e22b8e87", "0.27.0"),
    "v1.32.0": ("c48c62eac5da28cdadcf560d1d8616cfa6783b58f0d94cf63ad1bf49600cb027", "0.26.0"),
    "v1.33.1": ("050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f", "0.29.0"),
    "v1.34.0": ("7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a", "0.30.0"),
}
# Sources per image: v1.25.3 kind v0.17.0 default; v1.26.6 v0.20.0 notes; v1.27.3 v0.20.0
# default; v1.28.7 v0.22.0 notes; v1.30.0 v0.23.0 default; v1.31.6 v0.27.0 notes; v1.32.0
# v0.26.0 default; v1.33.1 v0.29.0 default; v1.34.0 v0.30.0 default.

_QS = "kn-plugin-quickstart pkg/kind/kind.go@knative-v"

_MINORS: dict[int, _Minor] = {
    10: _Minor(
        min_kubernetes="1.24",
        kourier="1.10.3",
        node="v1.25.3",
        reason=f"{_QS}1.10.0 pins v1.25.3",
        dates="2023-04-25 2023-05-09 2023-06-06 2023-09-19 2023-10-17 2023-10-31 2023-11-01",
    ),
    11: _Minor(
        min_kubernetes="1.25",
        kourier="1.11.6",
        node="v1.26.6",
        reason=f"{_QS}1.11.0 pins v1.26.6",
        dates="2023-07-25 2023-09-19 2023-10-17 2023-10-24 2023-11-03 2023-11-28 2023-12-19",
    ),
    12: _Minor(
        min_kubernetes="1.26",
        kourier="1.12.3",
        node="v1.26.6",
        reason=f"{_QS}1.12.0 pins v1.26.6",
        dates="2023-10-24 2023-11-21 2023-11-28 2023-12-19 2024-02-02",
    ),
    13: _Minor(
        min_kubernetes="1.27",
        kourier="1.13.0",
        node="v1.27.3",
        reason=f"{_QS}1.13.0 pins v1.27.3",
        dates="2024-01-24 2024-02-03 2024-05-28",
    ),
    14: _Minor(
        min_kubernetes="1.28",
        kourier="1.14.0",
        node="v1.28.7",
        reason=f"{_QS}1.14.0 pins v1.28.7 (it recommends kind 0.20; kind 0.22 built the image)",
        dates="2024-04-23 2024-05-28 2024-10-08",
    ),
    15: _Minor(
        min_kubernetes="1.28",
        kourier="1.15.1",
        node="v1.30.0",
        reason=f"{_QS}1.15.0 pins v1.30.0",
        dates="2024-07-23 2024-08-01 2024-08-06 2025-01-22",
    ),
    16: _Minor(
        min_kubernetes="1.28",
        kourier="1.16.0",
        node="v1.30.0",
        reason=f"{_QS}1.16.0 pins v1.30.0",
        dates="2024-10-22 2025-01-21 2025-01-28 2025-03-11",
    ),
    17: _Minor(
        min_kubernetes="1.30",
        kourier="1.17.0",
        node="v1.30.0",
        reason=f"{_QS}1.17.0 pins v1.30.0",
        dates="2025-01-22 2025-05-02 2025-06-10",
    ),
    18: _Minor(
        min_kubernetes="1.31",
        kourier="1.18.0",
        node="v1.31.6",
        reason=f"{_QS}1.18.0 pins v1.31.6 (it recommends kind 0.26; kind 0.27 built the image)",
        dates="2025-04-22 2025-06-10 2025-10-24",
    ),
    19: _Minor(
        min_kubernetes="1.32",
        kourier="1.19.6",
        node="v1.32.0",
        reason=f"{_QS}1.19.0 pins v1.31.6, below this release's minimum Kubernetes 1.32; "
        f"v1.32.0 is what {_QS}1.20.0 moved to",
        dates="2025-07-22 2025-08-19 2025-08-26 2025-09-02 2025-09-02 2025-09-09 2025-09-16 "
        "2025-10-24 2025-12-23 2026-01-28",
    ),
    20: _Minor(
        min_kubernetes="1.32",
        kourier="1.20.1",
        node="v1.32.0",
        reason=f"{_QS}1.20.0 pins v1.32.0",
        dates="2025-10-29 2025-12-25 2026-01-27 2026-02-24",
    ),
    21: _Minor(
        min_kubernetes="1.33",
        kourier="1.21.1",
        node="v1.33.1",
        reason=f"{_QS}1.21.0 pins v1.32.0, below this release's minimum Kubernetes 1.33; "
        "v1.33.1 is the default image of kind v0.29.0",
        dates="2026-01-27 2026-02-24 2026-03-24 2026-06-02",
    ),
    22: _Minor(
        min_kubernetes="1.34",
        kourier="1.22.1",
        node="v1.34.0",
        reason=f"{_QS}1.22.0 pins no image (so kind 0.26's default v1.32.0, below this "
        "release's minimum Kubernetes 1.34); v1.34.0 is what quickstart main pins with kind 0.30",
        dates="2026-04-28 2026-06-02",
    ),
    23: _Minor(
        min_kubernetes="1.34",
        kourier="1.23.0",
        node="v1.34.0",
        reason="kn-plugin-quickstart pkg/kind/kind.go@main (2026-06-16) pins v1.34.0 with kind "
        "0.30 and its CI requires it to equal knative/pkg's minimum Kubernetes",
        dates="2026-07-29",
    ),
}

# Below 1.10: local platform only (see the module docstring). minor -> (min Kubernetes,
# tag dates of .0, .1, ...).
_LOCAL_ONLY_MINORS: dict[int, tuple[str, str]] = {
    0: ("1.20", "2021-11-02 2021-11-16 2022-02-24"),
    1: ("1.20", "2021-12-14 2022-01-18 2022-01-25 2022-02-15 2022-02-25"),
    2: ("1.21", "2022-01-25 2022-02-14 2022-02-17 2022-03-01 2022-04-08 2022-04-14"),
    3: ("1.21", "2022-03-08 2022-04-08 2022-04-14"),
    4: ("1.22", "2022-04-19"),
    5: ("1.22", "2022-05-31 2022-11-29"),
    6: ("1.22", "2022-07-12 2022-09-27 2022-11-29 2022-12-08"),
    7: ("1.22", "2022-08-23 2022-08-24 2022-09-27 2022-11-29 2022-12-08"),
    8: ("1.23", "2022-10-19 2022-11-29 2022-12-06 2022-12-08 2023-02-27 2023-02-28 2023-04-04"),
    9: ("1.24", "2023-01-25 2023-02-27 2023-02-28 2023-04-04 2023-06-06"),
}

_RELEASES: dict[str, Release] = {
    f"1.{minor}.{patch}": Release(
        version=f"1.{minor}.{patch}",
        min_kubernetes=min_kubernetes,
        kourier_version="",
        kind_node_image="",
        min_kind_version="",
        released=date,
        node_image_reason="local platform only: the cluster platforms start at 1.10",
        platforms=("local",),
    )
    for minor, (min_kubernetes, dates) in sorted(_LOCAL_ONLY_MINORS.items())
    for patch, date in enumerate(dates.split())
}
_RELEASES |= {
    f"1.{minor}.{patch}": Release(
        version=f"1.{minor}.{patch}",
        min_kubernetes=m.min_kubernetes,
        kourier_version=m.kourier,
        kind_node_image=f"kindest/node:{m.node}@sha256:{_NODE_IMAGES[m.node][0]}",
        min_kind_version=_NODE_IMAGES[m.node][1],
        released=date,
        node_image_reason=m.reason,
    )
    for minor, m in sorted(_MINORS.items())
    for patch, date in enumerate(m.dates.split())
}

_VERSION_RE = re.compile(r"^(?:knative-v|v)?(\d+)\.(\d+)(?:\.(\d+))?$")


def releases(platform: str | None = None) -> list[Release]:
    """Every known release (or those ``platform`` can install), oldest first."""
    return [r for r in _RELEASES.values() if platform is None or platform in r.platforms]


def _all_minors() -> dict[int, str]:
    """minor -> tag dates of its patches, every known minor."""
    return {m: d for m, (_, d) in _LOCAL_ONLY_MINORS.items()} | {
        m: v.dates for m, v in _MINORS.items()
    }


def minors(platform: str | None = None) -> list[str]:
    """Known minors, ascending: ``["1.0", ..., "1.23"]``; for ``kind`` or ``existing`` the
    ones a cluster can install (``["1.10", ..., "1.23"]``)."""
    known = _MINORS if platform in ("kind", "existing") else _all_minors()
    return [f"1.{m}" for m in sorted(known)]


def _accepted() -> str:
    return (
        f"accepted: a minor ({', '.join(minors())}; below {minors('kind')[0]} "
        "--platform=local only) meaning its newest patch, or MINOR.PATCH, "
        "optionally written v1.14 or knative-v1.14.1"
    )


def names_patch(version: str) -> bool:
    """Whether ``version`` names a patch (``1.14.1``), not only a minor (``1.14``)."""
    match = _VERSION_RE.match(str(version).strip().lower())
    return bool(match and match.group(3) is not None)


def resolve(version: str) -> Release:
    """``"1.14"``/``"v1.14"`` -> newest 1.14 patch; ``"1.14.1"``/``"knative-v1.14.1"`` exact."""
    text = str(version).strip()
    match = _VERSION_RE.match(text.lower())
    if not match:
        raise CatalogError(f"{text!r} is not a Knative version; {_accepted()}")
    major, minor = int(match.group(1)), int(match.group(2))
    known = _all_minors()
    if major != 1 or minor not in known:
        raise CatalogError(f"Knative {major}.{minor} is not in the catalog; {_accepted()}")
    patches = range(len(known[minor].split()))
    if match.group(3) is None:
        return _RELEASES[f"1.{minor}.{patches[-1]}"]
    patch = int(match.group(3))
    if patch not in patches:
        known = ", ".join(f"1.{minor}.{p}" for p in patches)
        raise CatalogError(
            f"Knative 1.{minor}.{patch} is not a known release; 1.{minor} patches: {known} "
            f"(or 1.{minor} for the newest)"
        )
    return _RELEASES[f"1.{minor}.{patch}"]
