"""Report paths are tried for real before the run (evidence/writable.py): root's
``os.access`` says yes under /proc and /sys, and a read-only mount or a full disk shows
only when a file is made, so the report would have fallen back to a temp path after the
whole run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_knative_drain.evidence.writable import (
    NotWritable,
    check_directory,
    check_file,
    filesystem_of,
)


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/proc/knative-drain/run.json", "kernel's proc filesystem"),
        ("/proc/sys/vm/swappiness", "kernel's proc filesystem"),  # root can open it for write
        ("/sys/kernel/run.json", "kernel's sysfs filesystem"),
    ],
)
def test_kernel_filesystems_hold_no_reports(path: str, says: str) -> None:
    with pytest.raises(NotWritable, match=says):
        check_file(Path(path))


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A real read-only tmpfs mount (root only)."""
    point = tmp_path / "ro"
    point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def test_a_read_only_mount_is_refused(read_only: Path) -> None:
    with pytest.raises(NotWritable, match="not writable.*Read-only file system"):
        check_file(read_only / "reports" / "run.json")
    with pytest.raises(NotWritable, match="Read-only file system"):
        check_directory(read_only / "allure")


def test_a_writable_path_passes_and_leaves_nothing(tmp_path: Path) -> None:
    check_file(tmp_path / "a" / "b" / "run.json")
    check_directory(tmp_path / "allure")
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    check_file(existing)
    assert existing.read_text() == "{}"  # opened for append, never truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    with pytest.raises(NotWritable, match="is a file, so no directory"):
        check_file(existing / "run.json")
    with pytest.raises(NotWritable, match="is a directory"):
        check_file(tmp_path)


def test_the_mount_holding_a_path_is_the_longest_mount_point(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "23 22 0:22 / /proc rw,nosuid shared:2 - proc proc rw\n"
        "24 22 0:23 / /my\\040dir rw shared:3 - tmpfs tmpfs rw\n"
        "25 23 0:24 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n"
    )
    assert filesystem_of(Path("/procfs-like/x"), table) == "ext4"
    assert filesystem_of(Path("/proc/1/status"), table) == "proc"
    assert filesystem_of(Path("/my dir/run.json"), table) == "tmpfs"
    assert filesystem_of(Path("/proc/sys/fs/binfmt_misc/x"), table) == "binfmt_misc"
    assert filesystem_of(Path("/"), tmp_path / "no-such-table") is None
