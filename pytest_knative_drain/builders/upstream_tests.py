"""Knative Serving's own drain tests, built from the release's module: binaries and images.

Why: this suite's claim is that it catches drain failures Knative's own tests let pass.
That claim needs Knative's tests run beside it, on the same cluster, at the same
release: never a copy of their code here, only a build of the module at run time.

The serving module zip holds ``test/`` (one go.mod for the whole repository) and a
``vendor/modules.txt`` without vendored code, so builds need ``-mod=mod`` (as
:func:`gomod.go_env` sets). Each test package is ``go test -c -tags=e2e``; each test image
is a plain ``go build`` of ``test/test_images/<name>`` at ``/ko-app/<name>``, user 65532,
as ko builds it, tagged ``dev.local/knative-drain-upstream/<name>:<module version>``
(``dev.local`` is in ``registries-skipping-tag-resolving``, so no registry is asked).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from ..host.docker_engine import state_dir
from . import gomod
from .knative import SERVING, check_served
from .kubernetes import binary_image
from .rootfs import ImagesError

Progress = Callable[[str], None]
RECIPE = 1
IMAGE_REPO = "dev.local/knative-drain-upstream"


@dataclass(frozen=True)
class UpstreamTest:
    """One of Knative's tests about draining: where it lives and what it needs."""

    name: str
    package: str  # test/e2e or test/ha
    images: tuple[str, ...]  # test/test_images it deploys
    checks: str  # what it asserts, in one line (for the side-by-side table)


#: family -> Knative's tests of it (present in a release only where its source has them)
FAMILIES: dict[str, tuple[UpstreamTest, ...]] = {
    "destroypod": (
        UpstreamTest(
            "TestDestroyPodInflight",
            "test/e2e",
            ("timeout",),
            "one 35 s request survives the Configuration's deletion at 17.5 s",
        ),
        UpstreamTest(
            "TestDestroyPodTimely",
            "test/e2e",
            ("helloworld",),
            "a deleted pod is gone within 4.5 min (no traffic)",
        ),
        UpstreamTest(
            "TestDestroyPodWithRequests",
            "test/e2e",
            ("autoscale",),
            "six 12 s requests survive their pod's deletion",
        ),
    ),
    "websocket": (
        UpstreamTest(
            "TestWebSocketGracefulShutdown",
            "test/e2e",
            ("wsserver",),
            "a websocket sending a message a second closes 1000 when its Service is deleted",
        ),
    ),
    "ha": (
        UpstreamTest(
            "TestActivatorHAGraceful",
            "test/ha",
            ("pizzaplanetv1",),
            "an instant-reply prober keeps SLO 1.0 while each activator is deleted",
        ),
        UpstreamTest(
            "TestActivatorHANonGraceful",
            "test/ha",
            ("pizzaplanetv1",),
            "the same prober keeps SLO 0.90 while activators are killed (grace 0)",
        ),
    ),
}


@dataclass
class UpstreamBuild:
    """The test binaries (package -> path) and images (name -> ref) of one release."""

    version: str
    module_version: str
    source: Path  # the module in the module cache (read-only): test/config lives here
    binaries: dict[str, Path]
    images: dict[str, str]
    tests: list[UpstreamTest]  # the asked tests this release has
    absent: list[str]  # the asked tests this release's source does not have
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_repo(self) -> str:
        """``-dockerrepo``: the test's image path is ``{repo}/{name}:{tag}``."""
        return IMAGE_REPO

    def describe(self) -> dict[str, Any]:
        return {
            "serving_module": f"{SERVING}@{self.module_version}",
            "tests": [t.name for t in self.tests],
            "absent_in_release": self.absent,
            "images": self.images,
            "build_s": round(self.seconds, 1),
            "notes": self.notes,
        }


def present(source: Path, test: UpstreamTest) -> bool:
    """Whether the release's source defines ``test`` (TestWebSocketGracefulShutdown: 1.22+)."""
    pattern = re.compile(rf"^func {test.name}\(t \*testing\.T\)", re.MULTILINE)
    return any(
        pattern.search(path.read_text(errors="replace"))
        for path in (source / test.package).glob("*_test.go")
    )


def select(families: list[str]) -> list[UpstreamTest]:
    """The tests of ``families`` (names checked by the caller against :data:`FAMILIES`)."""
    return [t for f in families for t in FAMILIES[f]]


def image_ref(name: str, module_version: str) -> str:
    return f"{IMAGE_REPO}/{name}:{module_version}"


def build_upstream_tests(
    client: docker.DockerClient,
    version: str,
    families: list[str],
    progress: Progress = print,
) -> UpstreamBuild:
    """Test binaries and images for ``families`` of Knative ``version`` (cached by module
    version: a warm call only hashes the binaries into their images)."""
    started = time.monotonic()
    mod_version = check_served(version)
    source = Path(gomod.download(SERVING, mod_version)["Dir"])
    asked = select(families)
    tests = [t for t in asked if present(source, t)]
    absent = [t.name for t in asked if t not in tests]
    if not tests:
        raise ImagesError(
            f"Knative {version} ({SERVING}@{mod_version}) has none of the tests asked: "
            f"{', '.join(absent)}"
        )
    packages = sorted({t.package for t in tests})
    names = sorted({i for t in tests for i in t.images})
    bin_dir = state_dir() / "bin" / f"upstream-tests-{mod_version}-r{RECIPE}"
    wanted = [_binary_name(p) for p in packages] + names
    if not all((bin_dir / b).is_file() for b in wanted):
        progress(
            f"building Knative's tests from {SERVING}@{mod_version}: {', '.join(packages)} "
            f"(go test -c -tags=e2e) and images {', '.join(names)} (about 6 min cold)"
        )
        with tempfile.TemporaryDirectory(prefix="knative-drain-upstream-") as tmp:
            src = gomod.writable_copy(source, Path(tmp) / "serving")
            with gomod.staged(bin_dir) as staging:
                for package in packages:
                    out = staging / _binary_name(package)
                    gomod.run_go(
                        ["test", "-c", "-tags=e2e", "-o", str(out), f"./{package}"],
                        cwd=src,
                        env=gomod.go_env(),
                        what=f"go test -c -tags=e2e ./{package} ({SERVING}@{mod_version})",
                    )
                gomod.build({f"./test/test_images/{n}": n for n in names}, staging, cwd=src)
    images = {}
    for name in names:
        ref = image_ref(name, mod_version)
        binary_image(
            client,
            ref,
            {f"/ko-app/{name}": bin_dir / name},
            base="scratch",
            entrypoint=[f"/ko-app/{name}"],
            user="65532:65532",
            kind="upstream-test-image",
        )
        images[name] = ref
    return UpstreamBuild(
        version,
        mod_version,
        source,
        {p: bin_dir / _binary_name(p) for p in packages},
        images,
        tests,
        absent,
        time.monotonic() - started,
        [f"{m}: {why}" for m, why in gomod.UNVERIFIED.items()],
    )


def _binary_name(package: str) -> str:
    return package.rsplit("/", 1)[-1] + ".test"  # test/e2e -> e2e.test
