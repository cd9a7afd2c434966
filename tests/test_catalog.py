"""Release catalog: resolution rules, error messages and the integrity of the pinned data."""

import dataclasses
import datetime
import json
import re
from urllib.parse import urlparse

import pytest

from pytest_knative_drain.knative import catalog
from pytest_knative_drain.knative.catalog import CatalogError, Release

# Anchors from the facts sheet (§5 table), re-read from the git tags on 2026-11-24.
NEWEST_PATCH = {
    "1.10": "1.10.6", "1.11": "1.11.6", "1.12": "1.12.4", "1.13": "1.13.2",
    "1.14": "1.14.2", "1.15": "1.15.3", "1.16": "1.16.3", "1.17": "1.17.2",
    "1.18": "1.18.2", "1.19": "1.19.9", "1.20": "1.20.3", "1.21": "1.21.3",
    "1.22": "1.22.1", "1.23": "1.23.0",
}  # fmt: skip
MIN_K8S = {
    "1.10": "1.24", "1.11": "1.25", "1.12": "1.26", "1.13": "1.27", "1.14": "1.28",
    "1.15": "1.28", "1.16": "1.28", "1.17": "1.30", "1.18": "1.31", "1.19": "1.32",
    "1.20": "1.32", "1.21": "1.33", "1.22": "1.34", "1.23": "1.34",
}  # fmt: skip


def vt(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


# Below 1.10, local platform only (tag dates re-read 2026-12-01).
LOCAL_NEWEST_PATCH = {
    "1.0": "1.0.2", "1.1": "1.1.4", "1.2": "1.2.5", "1.3": "1.3.2", "1.4": "1.4.0",
    "1.5": "1.5.1", "1.6": "1.6.3", "1.7": "1.7.4", "1.8": "1.8.6", "1.9": "1.9.4",
}  # fmt: skip


def test_minors_are_1_0_to_1_23_in_numeric_order_clusters_from_1_10() -> None:
    assert catalog.minors() == [f"1.{m}" for m in range(0, 24)]
    assert catalog.minors() == list(LOCAL_NEWEST_PATCH) + list(NEWEST_PATCH)
    assert catalog.minors("kind") == catalog.minors("existing") == list(NEWEST_PATCH)
    assert catalog.minors("local") == catalog.minors()


@pytest.mark.parametrize("minor", list(LOCAL_NEWEST_PATCH))
def test_old_minors_are_local_only(minor: str) -> None:
    release = catalog.resolve(minor)
    assert release.version == LOCAL_NEWEST_PATCH[minor]
    assert release.platforms == ("local",) and not release.on_clusters
    release.check_platform("local")
    patch = vt(release.version)[2]
    assert release.go_module_version == f"v0.{int(minor.split('.')[1]) + 27}.{patch}"
    for platform in ("kind", "existing"):
        with pytest.raises(CatalogError, match=r"runs on --platform=local only .* start at 1\.10"):
            release.check_platform(platform)
    data = json.loads(json.dumps(release.to_dict()))
    assert data["platforms"] == ["local"] and "manifests" not in data
    assert release not in catalog.releases("kind")


@pytest.mark.parametrize("minor", list(NEWEST_PATCH))
def test_every_minor_resolves_to_its_newest_patch(minor: str) -> None:
    release = catalog.resolve(minor)
    assert release.version == NEWEST_PATCH[minor]
    assert release.minor == minor
    same_minor = [r.version for r in catalog.releases() if r.minor == minor]
    assert release.version == max(same_minor, key=vt)
    assert catalog.resolve(f"v{minor}") == release
    assert catalog.resolve(f"knative-v{minor}") == release
    assert release.min_kubernetes == MIN_K8S[minor]


def test_releases_ordered_and_patches_contiguous_from_zero() -> None:
    versions = [r.version for r in catalog.releases()]
    assert versions == sorted(versions, key=vt)
    assert len(versions) == len(set(versions)) == 60 + 41  # 1.10-1.23, then 1.0-1.9
    for minor in catalog.minors():
        patches = [vt(r.version)[2] for r in catalog.releases() if r.minor == minor]
        assert patches == list(range(len(patches))), minor


def test_exact_and_prefixed_spellings() -> None:
    exact = catalog.resolve("1.14.1")
    assert exact.version == "1.14.1"
    for spelling in ("v1.14.1", "knative-v1.14.1", " 1.14.1 ", "Knative-V1.14.1"):
        assert catalog.resolve(spelling) == exact
    assert catalog.resolve("1.14.0").version == "1.14.0"


@pytest.mark.parametrize("text", ["", "latest", "1", "1.14.x", "v", "1.14.1.0", "knative-1.14"])
def test_malformed_names_every_minor(text: str) -> None:
    with pytest.raises(CatalogError) as info:
        catalog.resolve(text)
    message = str(info.value)
    assert repr(text.strip()) in message
    assert all(m in message for m in catalog.minors())


@pytest.mark.parametrize("text", ["1.24", "2.14", "0.41.2", "v1.99.3"])
def test_unknown_minor_names_every_minor(text: str) -> None:
    with pytest.raises(CatalogError, match="not in the catalog") as info:
        catalog.resolve(text)
    assert ", ".join(catalog.minors()) in str(info.value)


def test_unknown_patch_names_the_patches_of_that_minor() -> None:
    with pytest.raises(CatalogError) as info:
        catalog.resolve("1.14.3")
    assert "1.14 patches: 1.14.0, 1.14.1, 1.14.2" in str(info.value)
    with pytest.raises(CatalogError, match=r"1\.23 patches: 1\.23\.0 "):
        catalog.resolve("knative-v1.23.1")


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


@pytest.mark.parametrize("release", catalog.releases("kind"), ids=lambda r: r.version)
def test_derived_names(release: Release) -> None:
    major, minor, patch = vt(release.version)
    assert major == 1
    assert release.tag == f"knative-v{release.version}"
    assert release.go_module_version == f"v0.{minor + 27}.{patch}"
    assert release.kourier_tag == f"knative-v{release.kourier_version}"
    assert vt(release.kourier_version)[:2] == (1, minor)  # same minor, own patch numbers


def test_go_module_anchor_from_the_module_proxy() -> None:
    # proxy.golang.org knative.dev/serving/@v/v0.41.2.info names the knative-v1.14.2 commit.
    assert catalog.resolve("1.14.2").go_module_version == "v0.41.2"
    assert catalog.resolve("1.10").go_module_version == "v0.37.6"
    assert catalog.resolve("1.23").go_module_version == "v0.50.0"


def test_kourier_pairs_with_newest_kourier_patch() -> None:
    assert {r.kourier_version for r in catalog.releases() if r.minor == "1.14"} == {"1.14.0"}
    assert catalog.resolve("1.19.2").kourier_version == "1.19.6"
    assert catalog.resolve("1.11.0").kourier_version == "1.11.6"


@pytest.mark.parametrize("release", catalog.releases("kind"), ids=lambda r: r.version)
def test_manifest_urls_are_well_formed(release: Release) -> None:
    urls = release.manifest_urls()
    assert list(urls) == ["serving-crds.yaml", "serving-core.yaml", "kourier.yaml"]
    for name, url in urls.items():
        parsed = urlparse(url)
        assert (parsed.scheme, parsed.netloc, parsed.query, parsed.fragment) == (
            "https",
            "github.com",
            "",
            "",
        )
        repo, tag = (
            ("knative-extensions/net-kourier", release.kourier_tag)
            if name == "kourier.yaml"
            else ("knative/serving", release.tag)
        )
        assert parsed.path == f"/{repo}/releases/download/{tag}/{name}"
    assert release.serving_crds_url == urls["serving-crds.yaml"]
    assert release.serving_core_url == urls["serving-core.yaml"]
    assert release.kourier_url == urls["kourier.yaml"]


@pytest.mark.parametrize("release", catalog.releases("kind"), ids=lambda r: r.version)
def test_kind_node_image_meets_min_kubernetes(release: Release) -> None:
    match = re.fullmatch(
        r"kindest/node:v(\d+\.\d+\.\d+)@sha256:([0-9a-f]{64})", release.kind_node_image
    )
    assert match, release.kind_node_image
    assert release.kind_node_kubernetes == match.group(1)
    assert vt(release.kind_node_kubernetes)[:2] >= vt(release.min_kubernetes)
    assert re.fullmatch(r"0\.\d+\.\d+", release.min_kind_version)
    assert vt(release.min_kind_version) >= (0, 17, 0)
    assert release.node_image_reason


def test_node_image_choices_where_quickstart_falls_short() -> None:
    # quickstart's image for these minors is older than Knative's minimum Kubernetes.
    assert catalog.resolve("1.19").kind_node_kubernetes == "1.32.0"
    assert catalog.resolve("1.21").kind_node_kubernetes == "1.33.1"
    assert catalog.resolve("1.22").kind_node_kubernetes == "1.34.0"
    # The v1.28.7 image quickstart pins for 1.14 was built by kind v0.22.0.
    assert catalog.resolve("1.14").min_kind_version == "0.22.0"
    # One digest per node image across the catalog.
    digests: dict[str, set[str]] = {}
    for r in catalog.releases("kind"):
        digests.setdefault(r.kind_node_kubernetes, set()).add(r.kind_node_image)
    assert all(len(images) == 1 for images in digests.values())


def test_release_dates_iso_and_not_before_previous_patch() -> None:
    for minor in catalog.minors():
        dates = [
            datetime.date.fromisoformat(r.released)
            for r in catalog.releases()
            if r.minor == minor and r.released
        ]
        assert dates == sorted(dates), minor
    first = [
        datetime.date.fromisoformat(catalog.resolve(f"{m}.0").released or "")
        for m in catalog.minors()
    ]
    assert first == sorted(first)
    assert all(d <= datetime.date(2026, 11, 24) for d in first)


def test_to_dict_is_json_and_release_is_frozen() -> None:
    release = catalog.resolve("1.14.2")
    data = json.loads(json.dumps(release.to_dict()))
    assert data["version"] == "1.14.2"
    assert data["go_module_version"] == "v0.41.2"
    assert data["tag"] == "knative-v1.14.2"
    assert data["kourier_tag"] == "knative-v1.14.0"
    assert data["manifests"]["serving-core.yaml"] == release.serving_core_url
    with pytest.raises(dataclasses.FrozenInstanceError):
        release.version = "1.14.3"  # type: ignore[misc]
