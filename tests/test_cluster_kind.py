"""kind platform preflight: clear errors when kind is missing or too old (runs here)."""

from __future__ import annotations

import pytest

from pytest_knative_drain import catalog
from pytest_knative_drain.platforms.cluster import ClusterError
from pytest_knative_drain.platforms.kind import check_docker, find_kind


def _fake_kind(tmp_path, version: str):
    # A real executable printing kind's `version` line format (kind cmd/kind/version).
    path = tmp_path / "kind"
    path.write_text(f"#!/bin/sh\necho 'kind v{version} go1.22.1 linux/amd64'\n")
    path.chmod(0o755)
    return path


def test_missing_kind_names_the_needed_version(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match=r"kind binary >= 0.22.0 .* not found on PATH"):
        find_kind(release)
    with pytest.raises(ClusterError, match="does not exist"):
        find_kind(release, tmp_path / "nope")


def test_kind_version_gate(tmp_path) -> None:
    release = catalog.resolve("1.14")
    with pytest.raises(ClusterError, match=r"kind 0.17.0 .* too old .* install kind >= 0.22.0"):
        find_kind(release, _fake_kind(tmp_path, "0.17.0"))
    path, version = find_kind(release, _fake_kind(tmp_path, "0.22.0"))
    assert version == "0.22.0" and path.name == "kind"


def test_docker_missing_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ClusterError, match="needs a running Docker engine"):
        check_docker()
