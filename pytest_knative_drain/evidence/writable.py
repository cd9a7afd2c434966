"""Whether a report can be written at a path, asked before the run instead of after it.

``os.access`` is no answer for root: it allows writes under ``/proc``, ``/sys`` and on a
read-only mount, and the whole run went by before the report fell back to a temp path.
So the nearest existing directory gets a real file created and removed in it, and paths on
kernel pseudo-filesystems (where root may even open a file for writing) are refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: kernel filesystems that hold no files of ours (``/proc/self/mountinfo`` type names)
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "devtmpfs",
        "debugfs",
        "tracefs",
        "securityfs",
        "configfs",
        "pstore",
        "bpf",
        "efivarfs",
        "binfmt_misc",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
    }
)
MOUNTINFO = Path("/proc/self/mountinfo")


class NotWritable(ValueError):
    """No report can be written there; the message says why, without the path's flag."""


def first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``exists`` is False under a file)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def filesystem_of(path: Path, mountinfo: Path = MOUNTINFO) -> str | None:
    """The filesystem type of the mount holding ``path`` (longest mount point), or None
    where the mount table cannot be read (not Linux)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    resolved = str(path.resolve())
    best, fstype = "", None
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, line.split(" - ", 1)[1].split()[0]
    return fstype


def _refuse_pseudo(path: Path) -> None:
    fstype = filesystem_of(path)
    if fstype in PSEUDO_FILESYSTEMS:
        raise NotWritable(f"{path} is on the kernel's {fstype} filesystem, which holds no reports")


def check_directory(path: Path) -> None:
    """A directory can be made at ``path`` (or exists there) and a file written into it."""
    ancestor = first_existing(path)
    if not ancestor.is_dir():
        raise NotWritable(f"{ancestor} is a file, so no directory can be made under it")
    _refuse_pseudo(ancestor)
    try:
        fd, probe = tempfile.mkstemp(prefix=".knative-drain-probe-", dir=ancestor)
    except OSError as exc:
        raise NotWritable(f"{ancestor} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def check_file(path: Path) -> None:
    """A file can be written at ``path``: its directory can be made and written, and an
    existing file there is a regular file that opens for writing (it is not truncated)."""
    if path.is_dir():
        raise NotWritable("is a directory; give a file path, e.g. run.json")
    if path.exists():
        _refuse_pseudo(path)
        try:
            with path.open("a"):
                pass
        except OSError as exc:
            raise NotWritable(f"the file exists and is not writable ({exc.strerror})") from None
    check_directory(path.parent)
