"""Real images that break the fixture contract, built from the local base image for a test."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator

import docker

from pytest_knative_drain.builders.images import BASE_IMAGE

#: name -> the Dockerfile line(s) after ``FROM`` the base image
EXITS = 'CMD ["sh", "-c", "echo the app is going away >&2; exit 3"]'
WRONG_BODY = 'CMD ["python3", "-m", "http.server", "8080"]'


@contextlib.contextmanager
def built(prefix: str, dockerfiles: dict[str, str]) -> Iterator[dict[str, str]]:
    """Build each image as ``<prefix>-<random>:<name>``; yield name -> tag; remove them after."""
    engine = docker.from_env()
    repo = f"{prefix}-{uuid.uuid4().hex[:6]}"
    tags: dict[str, str] = {}
    try:
        for name, line in dockerfiles.items():
            dockerfile = f"FROM {BASE_IMAGE}\n{line}\n".encode()
            engine.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:{name}", rm=True)
            tags[name] = f"{repo}:{name}"
        yield tags
    finally:
        for tag in tags.values():
            engine.images.remove(tag, force=True)
