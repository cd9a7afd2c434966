"""Debian root filesystems made with debootstrap and imported as Docker images.

No registry answers here, so every image starts from a root filesystem built from this
machine's Debian mirror (read from its apt sources at run time, never stored).
:func:`ensure_rootfs_image` makes one, optionally lets a caller change the tree before it
is imported, and labels the image with a hash of its inputs so a second call reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..host.docker_engine import apt_install, state_dir

SUITE = "bookworm"
DEBOOTSTRAP_TIMEOUT_S = 1800
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LABEL_INPUTS = "knative-drain.inputs"
LABEL_KIND = "knative-drain.kind"
Progress = Callable[[str], None]
Customize = Callable[[Path], None]


class ImagesError(RuntimeError):
    """An image could not be made; the message says which step and why."""


@dataclass(frozen=True)
class ImageOutcome:
    """One provisioned image: its tag, ID, whether the cache had it, and its labels."""

    tag: str
    image_id: str
    cached: bool
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)


def inputs_hash(*parts: Any) -> str:
    """A stable hash of an image's inputs (JSON-serialisable parts; bytes by their digest)."""
    norm = [hashlib.sha256(p).hexdigest() if isinstance(p, bytes) else p for p in parts]
    return hashlib.sha256(json.dumps(norm, sort_keys=True).encode()).hexdigest()[:32]


def cached_image(client: docker.DockerClient, tag: str, digest: str) -> Any | None:
    """The image ``tag`` if it exists and was made from the inputs hashed as ``digest``."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return image if (image.labels or {}).get(LABEL_INPUTS) == digest else None


def outcome(image: Any, tag: str, cached: bool, started: float) -> ImageOutcome:
    return ImageOutcome(
        tag=tag,
        image_id=image.id,
        cached=cached,
        seconds=time.monotonic() - started,
        labels=dict(image.labels or {}),
    )


def debian_mirror(sources: Path = DEBIAN_SOURCES, suite: str = SUITE) -> str:
    """The Debian mirror this machine uses (``URIs:`` of the deb822 stanza serving ``suite``).

    Read at run time, never stored: each machine reaches Debian through its own mirror.
    """
    try:
        text = sources.read_text()
    except OSError as exc:
        raise ImagesError(
            f"cannot read the Debian mirror from {sources} ({exc.strerror}); "
            "the offline base image is made with debootstrap from this machine's mirror"
        ) from None
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if suite in fields.get("suites", "").split() and fields.get("uris"):
            return fields["uris"].split()[0]
    raise ImagesError(f"{sources} has no stanza with 'Suites: {suite}' and a 'URIs:' line")


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything a failed debootstrap left mounted inside ``root``."""
    prefix = str(root.resolve()) + "/"
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


@contextlib.contextmanager
def rootfs_dir() -> Iterator[Path]:
    """A scratch directory for a root filesystem, removed (and unmounted) afterwards."""
    parent = "/var/tmp" if Path("/var/tmp").is_dir() else None  # not a RAM-backed /tmp
    root = Path(tempfile.mkdtemp(prefix="knative-drain-rootfs-", dir=parent))
    try:
        yield root
    finally:
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


@retry(
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=5, max=30),
    retry=retry_if_exception_type(ImagesError),
    reraise=True,
)
def debootstrap(root: Path, packages: Sequence[str], log: Path, mirror: str | None = None) -> None:
    """``debootstrap --variant=minbase --include=PACKAGES bookworm ROOT MIRROR`` (retried)."""
    _unmount_under(root)
    for child in root.iterdir():  # a failed try leaves a partial tree
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if shutil.which("debootstrap") is None:
        try:
            apt_install("debootstrap")
        except (subprocess.CalledProcessError, OSError) as exc:
            raise ImagesError(f"debootstrap is missing and apt-get install failed: {exc}") from None
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        SUITE,
        str(root),
        mirror or debian_mirror(),
    ]
    with log.open("w") as out:
        try:
            code = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=DEBOOTSTRAP_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            raise ImagesError(
                f"debootstrap: no end within {DEBOOTSTRAP_TIMEOUT_S} s (mirror stuck?); log {log}"
            ) from None
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ImagesError(f"debootstrap failed (exit {code}); log {log}:\n{tail}")


def import_tree(client: docker.DockerClient, root: Path, tag: str, changes: Sequence[str]) -> Any:
    """``tar -C ROOT -c . | docker import`` with Dockerfile ``changes``; the image."""
    repository, _, version = tag.rpartition(":")
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        chunks = iter(lambda: tar.stdout.read(1 << 20), b"")  # type: ignore[union-attr]
        try:
            client.api.import_image(
                src=chunks,
                repository=repository,
                tag=version,
                changes=list(changes),
                stream_src=True,
            )
        finally:
            tar.stdout.close()
        if tar.wait() != 0:  # a truncated import must not pass for a cached image
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(tag, force=True)
            raise ImagesError(f"tar of the root filesystem for {tag} failed ({tar.returncode})")
    return client.images.get(tag)


def ensure_rootfs_image(
    client: docker.DockerClient,
    tag: str,
    packages: Sequence[str],
    *,
    kind: str,
    recipe: Any,
    changes: Sequence[str] = (),
    customize: Customize | None = None,
    progress: Progress = print,
) -> ImageOutcome:
    """A bookworm minbase image with ``packages``, unless one of the same inputs exists.

    ``recipe`` stands for everything ``customize`` does (bump it when that changes).
    """
    started = time.monotonic()
    digest = inputs_hash(kind, recipe, SUITE, "minbase", sorted(packages), list(changes))
    image = cached_image(client, tag, digest)
    if image is not None:
        return outcome(image, tag, True, started)
    mirror = debian_mirror()
    progress(f"{tag}: debootstrap {SUITE} minbase + {len(packages)} packages (about a minute)")
    labels = {LABEL_INPUTS: digest, LABEL_KIND: kind, "knative-drain.suite": SUITE}
    all_changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        *changes,
        *(f"LABEL {key}={value}" for key, value in labels.items()),
    ]
    with rootfs_dir() as root:
        debootstrap(root, packages, state_dir() / f"debootstrap-{kind}.log", mirror)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):  # ~100 MB of .debs
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        if customize is not None:
            customize(root)
        image = import_tree(client, root, tag, all_changes)
    if (image.labels or {}).get(LABEL_INPUTS) != digest:
        raise ImagesError(f"docker import did not label {tag} as expected")
    return outcome(image, tag, False, started)
