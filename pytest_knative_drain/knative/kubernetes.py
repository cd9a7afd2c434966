"""Which Kubernetes a kind cluster runs for a Knative release, and which kind builds it.

A Knative release refuses a Kubernetes older than its minimum (knative.dev/pkg
``version/version.go``, ``Release.min_kubernetes``). The default is what upstream CI tests
for that release: the newest Kubernetes minor in its tested range that builds here; a
release with no newer buildable minor in range gets the oldest buildable one above its
minimum (and the reason says so).

What builds here is what the Go module proxy serves. Probed 2026-12-04 (``.info``,
``.mod`` and ``.zip`` of each ``k8s.io/kubernetes`` patch): the newest fully served patches
are v1.31.14, v1.32.13, v1.33.13, v1.34.12, v1.35.8 and v1.36.5 (refused, for example:
v1.32.12 and v1.32.14, v1.33.8, v1.33.10, v1.33.14, v1.34.6, v1.34.13, v1.35.7, v1.35.9).
``sigs.k8s.io/kind`` v0.24.0, v0.30.0, v0.32.0 and v0.33.0 resolve (v0.30.0's default node
is v1.34.0; v0.32.0's v1.36.1). 1.35 and newer are left out: this host runs cgroup v1, which
kubelet refuses from 1.35 by default (``failCgroupV1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import Release


@dataclass(frozen=True)
class KubernetesBuild:
    """One Kubernetes minor this machine builds node images of, and the kind that runs it."""

    version: str  # "v1.34.12": the patch built
    kind_version: str  # "v0.30.0": the kind command and its node-image base files
    verified: str  # where a cluster of it ran here, or "" when none has yet


#: minor -> what is built for it (see the module docstring for how these were found)
BUILDS: dict[str, KubernetesBuild] = {
    "1.31": KubernetesBuild(
        "v1.31.14", "v0.24.0", "kind, Knative 1.14.2 and 1.18.1 (evidence/2026-12-01-*)"
    ),
    "1.32": KubernetesBuild("v1.32.13", "v0.30.0", ""),
    "1.33": KubernetesBuild("v1.33.13", "v0.30.0", ""),
    "1.34": KubernetesBuild(
        "v1.34.12", "v0.30.0", "kind, Knative 1.23.0 (evidence/2026-12-04-kind-matrix)"
    ),
}

#: Knative minor -> (oldest, newest) Kubernetes minor its upstream kind CI ran
#: (.github/workflows/kind-e2e.yaml at the release's tags)
UPSTREAM_TESTED: dict[str, tuple[str, str]] = {
    "1.18": ("1.31", "1.32"),
    "1.19": ("1.32", "1.33"),
    "1.20": ("1.32", "1.34"),
    "1.21": ("1.33", "1.35"),
    "1.22": ("1.34", "1.35"),
    "1.23": ("1.34", "1.35"),
}
#: releases with no record above: the tested range is taken as minimum .. minimum + 2
ASSUMED_SPAN = 2

_MINOR = re.compile(r"^v?1\.(\d+)$")
_PATCH = re.compile(r"^v?1\.(\d+)\.(\d+)$")


class KubernetesVersionError(ValueError):
    """A --kubernetes-version that this release or this machine cannot run (one line)."""


@dataclass(frozen=True)
class KubernetesChoice:
    """The Kubernetes a run's kind cluster gets, and why."""

    version: str  # "v1.34.12"
    kind_version: str
    reason: str

    @property
    def minor(self) -> str:
        return self.version.removeprefix("v").rsplit(".", 1)[0]


def _key(minor: str) -> tuple[int, int]:
    major, m = minor.split(".")
    return int(major), int(m)


def tested_range(release: Release) -> tuple[str, str, bool]:
    """(oldest, newest, known): the Kubernetes minors upstream tests ``release`` on."""
    found = UPSTREAM_TESTED.get(release.minor)
    if found is not None:
        return found[0], found[1], True
    low = release.min_kubernetes
    return low, f"1.{_key(low)[1] + ASSUMED_SPAN}", False


def default_for(release: Release) -> KubernetesChoice:
    """The newest buildable minor in the release's tested range, else the oldest above it."""
    low, high, known = tested_range(release)
    source = "its upstream kind CI" if known else f"assumed: its minimum + {ASSUMED_SPAN}"
    within = [m for m in BUILDS if _key(low) <= _key(m) <= _key(high)]
    if within:
        minor = max(within, key=_key)
        why = f"newest Kubernetes built here that Knative {release.minor} is tested on ({source})"
    else:
        above = [m for m in BUILDS if _key(m) >= _key(release.min_kubernetes)]
        if not above:
            raise KubernetesVersionError(
                f"Knative {release.version} needs Kubernetes >= {release.min_kubernetes}; "
                f"this machine builds {', '.join(BUILDS)}"
            )
        minor = min(above, key=_key)
        why = (
            f"oldest Kubernetes built here above Knative {release.minor}'s minimum "
            f"{release.min_kubernetes} (tested on {low}-{high}, {source}; none of those "
            "builds here)"
        )
    build = BUILDS[minor]
    return KubernetesChoice(build.version, build.kind_version, why)


def resolve(release: Release, asked: str | None) -> KubernetesChoice:
    """``asked`` (``1.34``, ``1.34.12`` or ``v1.34.12``; None: the default) for ``release``."""
    if asked is None:
        return default_for(release)
    text = str(asked).strip()
    minor_match, patch_match = _MINOR.match(text), _PATCH.match(text)
    if not (minor_match or patch_match):
        raise KubernetesVersionError(
            f"--kubernetes-version={asked}: expected a minor like 1.34 or a patch like "
            f"v1.34.12; accepted minors: {', '.join(BUILDS)}"
        )
    minor = f"1.{(minor_match or patch_match)[1]}"  # type: ignore[index]
    if _key(minor) < _key(release.min_kubernetes):
        raise KubernetesVersionError(
            f"--kubernetes-version={asked}: Knative {release.version} needs Kubernetes >= "
            f"{release.min_kubernetes}"
        )
    build = BUILDS.get(minor)
    if build is None:
        raise KubernetesVersionError(
            f"--kubernetes-version={asked}: no node image of Kubernetes {minor} is built here; "
            f"accepted minors: {', '.join(BUILDS)}"
        )
    version = build.version
    if patch_match:
        version = f"v1.{patch_match[1]}.{patch_match[2]}"
    return KubernetesChoice(version, build.kind_version, "asked with --kubernetes-version")
