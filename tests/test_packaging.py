"""The suite as a vendor gets it: built into a wheel, installed into a fresh virtual
environment, run from a directory outside the checkout with ``pytest --pyargs``.

The wheel is built (``python -m build``: sdist, then the wheel from the sdist) from a copy
of the working tree, so nothing is written into the checkout. The fresh venv gets its
dependencies from PyPI through a wheelhouse cached under ~/.cache/knative-drain/wheelhouse
(keyed by the wheel's Requires-Dist and the interpreter: this machine's pip keeps no HTTP
cache), so a warm run pays for the venv and the install, not for downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from pytest_knative_drain.host.docker_engine import docker_client, state_dir

ROOT = Path(__file__).resolve().parent.parent
SUITE = "pytest_knative_drain.conformance"
PLATFORM = ("--platform=local", "--knative-version=1.14")
# not slow: requests end inside the 30 s quiet period (the internal-tls twin left out)
ONE_CASE = "pod_delete_short and go_shutdown and not internal_tls"
SUITE_FILES = {f"test_{f}.py" for f in ("activator", "node_drain", "pod_delete", "rollout")}
SUITE_FILES |= {"test_scale_down.py", "test_container_restart.py", "__init__.py"}
APP = "go-shutdown"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    sdist: Path
    venv: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def env(self) -> dict[str, str]:
        """The environment with the venv first on PATH and nothing pointing at the checkout."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{args}: exit {proc.returncode}\n{proc.stdout[-4000:]}\n" + (proc.stderr[-3000:])
    )
    return proc


def _copy_tree(dest: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, ignored files left out)."""
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return sorted(line for line in lines if line.startswith("Requires-Dist:"))


@retry(
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=2, max=20),
    retry=retry_if_exception_type(AssertionError),
    reraise=True,
)
def _pip_wheel(wheel: Path, into: Path) -> None:
    _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", into, wheel], cwd=into, timeout=900)


def _wheelhouse(wheel: Path) -> Path:
    """The wheel's dependencies as wheels from PyPI, fetched once per set of requirements."""
    key = hashlib.sha256(
        "\n".join([sys.version, sys.platform, *_requires(wheel)]).encode()
    ).hexdigest()[:16]
    house = state_dir() / "wheelhouse" / key
    if house.is_dir():
        return house
    house.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=house.parent))
    try:
        _pip_wheel(wheel, scratch)
        for own in scratch.glob("pytest_knative_drain-*"):
            own.unlink()
        # another run may have finished first: its wheelhouse is as good
        with contextlib.suppress(OSError):
            scratch.rename(house)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return house


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    with tempfile.TemporaryDirectory(prefix="knative-drain-packaging-") as tmp:
        work = Path(tmp)
        src = _copy_tree(work / "src")
        dist = work / "dist"
        _run([sys.executable, "-m", "build", "-q", "--outdir", dist, src], cwd=work)
        wheel = next(dist.glob("*.whl"))
        venv = work / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
        pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]
        house = _wheelhouse(wheel)
        _run([*pip, "install", "-q", "--no-compile", "--no-index", "-f", house, wheel], cwd=work)
        yield Installed(wheel, next(dist.glob("*.tar.gz")), venv)


def _cases(stdout: str) -> list[str]:
    """``test_<family>.py::test_<family>[case]`` of each collected item, whatever the root."""
    return sorted(line.rsplit("/", 1)[-1] for line in stdout.splitlines() if "::" in line)


def test_wheel_and_sdist_carry_the_suite_and_the_fixture_apps(installed: Installed) -> None:
    apps = sorted(p.parent.name for p in (ROOT / "fixtures" / "apps").glob("*/Dockerfile"))
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    assert {
        n.rsplit("/", 1)[-1] for n in names if n.startswith("pytest_knative_drain/conformance/")
    } == SUITE_FILES
    for app in apps:
        assert f"pytest_knative_drain/fixture_data/apps/{app}/Dockerfile" in names
    with tarfile.open(installed.sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {f"conformance/{f}" for f in SUITE_FILES} <= members


def test_installed_suite_collects_the_checkouts_cases(installed: Installed, tmp_path: Path) -> None:
    probe = "import pytest_knative_drain.conformance as c\n"
    probe += "import pytest_knative_drain.builders.images as i\n"
    probe += "print(c.__file__); print(i.apps_dir())"
    where = _run([installed.bin("python"), "-c", probe], cwd=tmp_path, env=installed.env())
    suite_file, apps = where.stdout.split()
    # the installed copies, not the checkout's
    assert Path(suite_file).is_relative_to(installed.venv), suite_file
    assert Path(apps).is_relative_to(installed.venv) and (Path(apps) / APP / "Dockerfile").is_file()

    collect = ("--collect-only", "-q", "-p", "no:cacheprovider", *PLATFORM)
    there = _run(
        [installed.bin("pytest"), "--pyargs", SUITE, *collect], cwd=tmp_path, env=installed.env()
    )
    here = _run([sys.executable, "-m", "pytest", "conformance", *collect], cwd=ROOT)
    assert _cases(there.stdout) == _cases(here.stdout) and len(_cases(here.stdout)) > 20
    one = _run(
        [installed.bin("pytest"), "--pyargs", SUITE, *collect, "-k", ONE_CASE],
        cwd=tmp_path,
        env=installed.env(),
    )
    assert _cases(one.stdout) == [
        "test_pod_delete.py::test_pod_delete[pod-delete-short-go-shutdown]"
    ]


@pytest.mark.slow
def test_installed_suite_runs_a_case_from_outside_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    report = tmp_path / "drain-report.json"
    run = _run(
        [
            installed.bin("pytest"),
            "--pyargs",
            SUITE,
            *PLATFORM,
            "-k",
            ONE_CASE,
            "-p",
            "no:cacheprovider",
            f"--drain-report={report}",
            f"--junitxml={tmp_path / 'junit.xml'}",
            "-rA",
        ],
        cwd=tmp_path,
        env=installed.env(),
        timeout=900,
    )
    suite = ElementTree.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": 1, "failures": 0, "errors": 0, "skipped": 0}, run.stdout[-3000:]
    assert "PASSED test_pod_delete.py::test_pod_delete[pod-delete-short-go-shutdown]" in run.stdout
    assert report.is_file()


@pytest.mark.slow
def test_installed_package_data_is_a_complete_build_context(installed: Installed) -> None:
    """The fixture apps as installed build an image on their own (a throwaway tag)."""
    from pytest_knative_drain.builders import images

    probe = "import pytest_knative_drain.builders.images as i; print(i.apps_dir())"
    apps = Path(
        _run(
            [installed.bin("python"), "-c", probe], cwd=installed.venv, env=installed.env()
        ).stdout.strip()
    )
    assert apps.is_relative_to(installed.venv)
    client = docker_client()
    tag = f"knative-drain-test/packaging:{uuid.uuid4().hex[:12]}"
    try:
        image, _log = client.images.build(
            path=str(apps),
            dockerfile=f"{APP}/Dockerfile",
            tag=tag,
            buildargs={"BASE_IMAGE": images.BASE_IMAGE, "GO_BUILDER": images.BASE_IMAGE},
            labels={"knative-drain.test": "packaging"},
            rm=True,
            forcerm=True,
        )
        assert image.attrs["Config"]["Entrypoint"] == ["/usr/local/bin/app"]
    finally:
        if client.images.list(filters={"reference": tag}):
            client.images.remove(tag)  # the tag only: layers shared with other images stay
