"""The Kubernetes a kind cluster runs per Knative release: the default, what is asked, refusals."""

from __future__ import annotations

import pytest

from pytest_knative_drain.knative import catalog
from pytest_knative_drain.knative import kubernetes as kube


@pytest.mark.parametrize(
    ("knative", "expected"),
    [
        ("1.23", "v1.34.12"),  # upstream CI: 1.34, 1.35; 1.35 is not built here
        ("1.22", "v1.34.12"),
        ("1.21", "v1.34.12"),
        ("1.20", "v1.34.12"),  # upstream: 1.32-1.34
        ("1.19", "v1.33.13"),  # upstream: 1.32, 1.33
        ("1.18", "v1.32.13"),
        ("1.14", "v1.31.14"),  # minimum 1.28, nothing of 1.28-1.30 builds here: the oldest above
        ("1.10", "v1.31.14"),
    ],
)
def test_the_default_is_the_newest_tested_minor_that_builds_here(knative: str, expected: str):
    release = catalog.resolve(knative)
    choice = kube.default_for(release)
    assert choice.version == expected
    assert choice.kind_version == kube.BUILDS[choice.minor].kind_version
    assert kube.resolve(release, None) == choice


def test_every_catalog_release_from_1_10_gets_a_kubernetes_at_or_above_its_minimum() -> None:
    for minor in catalog.minors("kind"):
        release = catalog.resolve(minor)
        version = release.version
        choice = kube.default_for(release)
        assert tuple(map(int, choice.minor.split("."))) >= tuple(
            map(int, release.min_kubernetes.split("."))
        ), version


def test_asked_minor_and_patch() -> None:
    release = catalog.resolve("1.23")
    assert kube.resolve(release, "1.34").version == "v1.34.12"
    assert kube.resolve(release, "v1.34.3").version == "v1.34.3"
    assert kube.resolve(release, "1.34.3").kind_version == "v0.30.0"


@pytest.mark.parametrize(
    ("knative", "asked", "says"),
    [
        ("1.23", "1.33", "--kubernetes-version=1.33: Knative 1.23.0 needs Kubernetes >= 1.34"),
        ("1.23", "1.35", "no node image of Kubernetes 1.35 is built here"),
        ("1.14", "latest", "expected a minor like 1.34"),
        ("1.14", "1.27", "Knative 1.14.2 needs Kubernetes >= 1.28"),
    ],
)
def test_refusals_name_both_versions(knative: str, asked: str, says: str) -> None:
    with pytest.raises(kube.KubernetesVersionError) as err:
        kube.resolve(catalog.resolve(knative), asked)
    assert says in str(err.value)
    assert "1.31, 1.32, 1.33, 1.34" in str(err.value) or "needs Kubernetes" in str(err.value)
