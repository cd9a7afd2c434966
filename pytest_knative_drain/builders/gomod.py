"""Go modules from the module proxy, and binaries built from them.

The proxy this machine reaches is a filtering mirror: some versions are refused (403)
though they exist upstream, and some checksum-database entries are missing (404). So a
module is never assumed to resolve: :func:`resolvable` asks the proxy for the ``.mod``
and ``.zip`` of a version, :func:`nearest_resolvable` walks down the patch releases, and
builds name what they substituted (``Substitution``) so reports can say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..host.signals import shielded

Progress = Callable[[str], None]
BUILD_TIMEOUT_S = 3600


class GoBuildError(RuntimeError):
    """A module could not be fetched or built; the message says which and why."""


@dataclass(frozen=True)
class Substitution:
    """A module version the proxy refused, and the one used instead."""

    module: str
    wanted: str
    used: str

    def __str__(self) -> str:
        return f"{self.module} {self.used} (for {self.wanted}: refused by the module proxy)"


def go_binary() -> str:
    """The ``go`` command (PATH, else /usr/local/go/bin/go), or GoBuildError."""
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if found is None:
        raise GoBuildError("Go is not installed: install Go >= 1.22 and put `go` on PATH")
    return found


def go_env(**extra: str) -> dict[str, str]:
    """The environment for Go commands: module mode, no cgo, plus ``extra``."""
    return {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", **extra}


def proxy_url() -> str:
    """The first module proxy of ``go env GOPROXY`` (where resolvability is asked)."""
    out = subprocess.run(
        [go_binary(), "env", "GOPROXY"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    first = out.split(",")[0].split("|")[0]
    return first if first.startswith("http") else "https://proxy.golang.org"


def module_cache() -> Path:
    """``go env GOMODCACHE``: where ``go mod download`` keeps modules."""
    out = subprocess.run(
        [go_binary(), "env", "GOMODCACHE"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    return Path(out)


def cached_download(
    module: str, version: str, ext: str, env: Mapping[str, str] | None = None
) -> Path:
    """Where ``go mod download`` keeps ``module@version``'s ``.mod`` or ``.zip`` (``ext``)
    in the module cache; ``env``'s GOMODCACHE first, as go itself reads it."""
    root = _cache_root(env)
    return root / "cache" / "download" / _escape(module) / "@v" / f"{version}.{ext}"


def _cache_root(env: Mapping[str, str] | None) -> Path:
    return Path((env or os.environ).get("GOMODCACHE") or module_cache())


def _escape(module: str) -> str:
    """The proxy protocol's case encoding: upper-case letters become ``!`` + lower case."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in module)


@retry(
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=2, max=10),
    retry=retry_if_exception_type(requests.ConnectionError),
    reraise=True,
)
def resolvable(module: str, version: str, proxy: str | None = None) -> bool:
    """Whether the proxy serves the ``.info``, ``.mod`` and ``.zip`` of ``module@version``
    (each is filtered on its own here: knative.dev/serving v0.45.2 has .mod and .zip but
    its .info is refused, and ``go mod download`` asks for the .info first)."""
    base = f"{proxy or proxy_url()}/{_escape(module)}/@v/{version}"
    return all(
        requests.head(f"{base}.{ext}", timeout=30, allow_redirects=True).ok
        for ext in ("info", "mod", "zip")
    )


def zip_available(module: str, version: str) -> bool:
    """Whether a build can have ``module@version``'s source: in the module cache, or its
    ``.zip`` served (the .info alone may be refused: knative.dev/caching for serving 1.22.1)."""
    if cached_download(module, version, "zip").is_file():
        return True
    return requests.head(
        f"{proxy_url()}/{_escape(module)}/@v/{version}.zip", timeout=30, allow_redirects=True
    ).ok


def go_mod_of(module: str, version: str) -> str | None:
    """``module@version``'s go.mod: from the module cache, else from the proxy; None when
    neither has it."""
    cached = cached_download(module, version, "mod")
    if cached.is_file():
        return cached.read_text()
    answer = requests.get(f"{proxy_url()}/{_escape(module)}/@v/{version}.mod", timeout=30)
    return answer.text if answer.ok else None


def required_version(go_mod: str, module: str) -> str | None:
    """The version ``go_mod`` requires of ``module`` (a replace to another version wins)."""
    found = None
    for line in go_mod.splitlines():
        words = line.split("//")[0].split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module and words[1].startswith("v"):
            found = found or words[1]
        if len(words) >= 4 and words[0] == "replace":
            words = words[1:]
        if len(words) >= 4 and words[0] == module and words[-3] == "=>" and words[-2] == module:
            return words[-1]
    return found


def nearest_resolvable(module: str, version: str, proxy: str | None = None) -> str | None:
    """``version`` if the proxy serves it, else the highest lower patch release it serves."""
    major_minor, _, patch = version.rpartition(".")
    for p in range(int(patch), -1, -1):
        candidate = f"{major_minor}.{p}"
        if resolvable(module, candidate, proxy):
            return candidate
    return None


def run_go(args: list[str], *, cwd: Path, env: Mapping[str, str], what: str) -> str:
    """Run ``go ARGS``; GoBuildError with the output's tail when it fails.

    Why not ``subprocess.run``: a build cut short (a signal, Ctrl-C, the timeout) must
    leave nothing. ``go`` dies on SIGTERM and SIGINT without removing its ``$WORK`` dir
    (measured: a ``go-build*`` dir stays in ``GOTMPDIR``) and its compile children run on.
    So go runs in its own session with ``GOTMPDIR`` in a directory of ours; any exit from
    here kills the whole group and removes that directory.
    """
    with tempfile.TemporaryDirectory(prefix="knative-drain-go-") as gotmp:
        proc = subprocess.Popen(
            [go_binary(), *args],
            cwd=cwd,
            env={**env, "GOTMPDIR": gotmp},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we end the group
        )
        try:
            stdout, stderr = proc.communicate(timeout=BUILD_TIMEOUT_S)
        except BaseException as exc:
            with shielded():
                _kill_group(proc.pid)
                proc.communicate()  # reap go and drain its pipes
            if isinstance(exc, subprocess.TimeoutExpired):
                raise GoBuildError(f"{what}: timed out after {BUILD_TIMEOUT_S} s") from None
            raise
        _kill_group(proc.pid)  # compile children that outlived go (none, normally)
    if proc.returncode != 0:
        tail = (stderr or stdout)[-2000:]
        raise GoBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return stdout


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A ``.tmp`` sibling of ``out`` to build into: renamed to ``out`` when the block ends
    well, removed when it does not (a failed or interrupted build leaves no half a cache
    entry behind, nor one that would be mistaken for a whole one)."""
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)  # left by a process that was SIGKILLed
    try:
        staging.mkdir(parents=True)
        yield staging
    except BaseException:
        with shielded():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


#: Modules fetched without a checksum-database lookup because the mirror here has no
#: entry for them (module@version -> why); builds name them in their notes.
UNVERIFIED: dict[str, str] = {}


@retry(
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=3, max=20),
    retry=retry_if_exception_type(GoBuildError),
    reraise=True,
)
def download(module: str, version: str, *, env: Mapping[str, str] | None = None) -> dict:
    """``go mod download -json module@version``: its JSON (``Dir``, ``GoMod``, ``Sum``).

    The checksum database here lacks some entries (404): such a module is fetched again
    with ``GONOSUMDB`` for its path only, and recorded in :data:`UNVERIFIED`.
    """
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    args = ["mod", "download", "-json", f"{module}@{version}"]
    what = f"go mod download {module}@{version}"
    try:
        out = run_go(args, cwd=scratch, env=env or go_env(), what=what)
    except GoBuildError as exc:
        extracted = _info_refused_but_extracted(module, version, str(exc), env)
        if extracted is not None:
            return extracted
        if "sum.golang.org/lookup" not in str(exc) or "404" not in str(exc):
            raise
        UNVERIFIED[f"{module}@{version}"] = "no checksum-database entry on this mirror"
        out = run_go(args, cwd=scratch, env={**(env or go_env()), "GONOSUMDB": module}, what=what)
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise GoBuildError(f"go mod download {module}@{version}: {info.get('Error', 'no Dir')}")
    return info


def _info_refused_but_extracted(
    module: str, version: str, error: str, env: Mapping[str, str] | None
) -> dict | None:
    """The module as a build already extracted it, when only its ``.info`` is refused.

    The mirror refuses some versions' ``.info`` and serves their ``.mod`` and ``.zip``
    (knative.dev/caching@v0.0.0-20260422140616-453ad996bbe2, which serving 1.22.1 requires:
    403 on .info, 2026-12-06). ``go build`` fetches only those two for a requirement, so
    building serving extracts it, while ``go mod download`` asks for the .info and fails.
    """
    if f"{version}.info" not in error or "403" not in error:
        return None
    go_mod = cached_download(module, version, "mod", env)
    directory = _cache_root(env) / f"{_escape(module)}@{version}"
    if not directory.is_dir() or not go_mod.is_file():
        return None
    return {"Path": module, "Version": version, "Dir": str(directory), "GoMod": str(go_mod)}


def writable_copy(module_dir: Path, dest: Path) -> Path:
    """Copy a module out of the read-only module cache so it can be built in place."""
    shutil.copytree(module_dir, dest, symlinks=True)
    for dirpath, _dirs, files in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o200)
    return dest


def build(
    packages: Mapping[str, str],
    out_dir: Path,
    *,
    cwd: Path,
    ldflags: str = "-s -w",
    env: Mapping[str, str] | None = None,
) -> None:
    """``go build -trimpath`` of each package (import path -> binary name) into ``out_dir``.

    One ``go build`` per binary, in order; the build cache shares the compile work.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for package, name in packages.items():
        run_go(
            ["build", "-trimpath", "-ldflags", ldflags, "-o", str(out_dir / name), package],
            cwd=cwd,
            env=env or go_env(),
            what=f"go build {package}",
        )


def wrapper_build(
    requires: Mapping[str, str],
    packages: Mapping[str, str],
    out_dir: Path,
    *,
    replaces: Mapping[str, str] | None = None,
    ldflags: str = "-s -w",
    env: Mapping[str, str] | None = None,
) -> None:
    """Build main packages of modules that cannot be ``go install``-ed (their go.mod has
    replace directives): a throwaway module requires them, ``go mod tidy``, ``go build``."""
    env = env or go_env()
    with tempfile.TemporaryDirectory(prefix="knative-drain-gomod-") as tmp:
        work = Path(tmp)
        lines = ["module knativedrain.local/wrapper", "", "go 1.22", ""]
        lines += [f"require {m} {v}" for m, v in sorted(requires.items())]
        lines += [f"replace {m} => {m} {v}" for m, v in sorted((replaces or {}).items())]
        (work / "go.mod").write_text("\n".join(lines) + "\n")
        imports = "\n".join(f'\t_ "{p}"' for p in packages)
        (work / "tools.go").write_text(
            f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
        )
        run_go(["mod", "tidy"], cwd=work, env=env, what=f"go mod tidy ({', '.join(requires)})")
        build(packages, out_dir, cwd=work, ldflags=ldflags, env=env)


def go_version_of(binary: Path) -> str:
    """The Go toolchain version a binary was built with (``go version BINARY``)."""
    out = run_go(["version", str(binary)], cwd=binary.parent, env=go_env(), what="go version")
    return out.rsplit(":", 1)[-1].strip()
