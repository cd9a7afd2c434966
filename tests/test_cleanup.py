"""``knative-drain cleanup`` finds the kind it built and leaves no volume behind.

On 2026-12-07 it looked for kind v0.24.0 only, found none on a machine that had built
v0.30.0 alone, so the kind clusters it should have deleted were left to its container
sweep, which removed the nodes without their anonymous /var volumes: 14 volumes, 45.9 GB,
and the disk was full.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from pytest_knative_drain.platforms import cleanup


def test_the_newest_kind_built_here_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert cleanup._kind_binary() is None
    for version in ("v0.24.0", "v0.30.0", "v0.9.0"):
        binary = tmp_path / "knative-drain" / "bin" / f"kind-{version}" / "kind"
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
    assert cleanup._kind_binary() == tmp_path / "knative-drain" / "bin" / "kind-v0.30.0" / "kind"


def test_a_removed_container_takes_its_anonymous_volumes() -> None:
    """A kind node runs with ``--volume /var``; a node removed without ``v`` leaves it."""
    client = docker.from_env()
    image = next((t for i in client.images.list() for t in i.tags if "knative-drain/" in t), None)
    if image is None:
        pytest.fail("no knative-drain image here: run scripts/bootstrap first")
    container = client.containers.create(image, ["true"], volumes=["/var/anon"])
    [volume] = [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"]
    cleanup.remove_container(container)
    assert volume not in {v.name for v in client.volumes.list()}
