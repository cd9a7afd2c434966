"""A runc front end that asks only for the capabilities this host can grant.

Why: kind nodes are ``docker run --privileged`` containers, and Docker 20.10 asks runc for
every capability it knows (moby/moby#42906). On a host whose capability bounding set
lacks one of them (seen here: CAP_SYS_RESOURCE), runc fails with "unable to apply caps:
operation not permitted" and no privileged container starts. This script, registered as
Docker's runtime, removes from the OCI spec every capability missing from its own
bounding set (``create``/``run``: ``<bundle>/config.json``; ``exec``: the ``--process``
file), then execs the real runc. Nothing changes on a host whose bounding set is full.

It runs as a standalone script (Docker calls it for every container): standard library
only, no package imports. ``privileged_runtime.py`` installs and registers it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REAL_RUNC_ENV = "KNATIVE_DRAIN_REAL_RUNC"
DEFAULT_REAL_RUNC = "/usr/sbin/runc"

#: linux/capability.h, in bit order.
CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]
_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def bounding_set(status: str | None = None) -> frozenset[str]:
    """``CAP_*`` names in this process's bounding set (``CapBnd`` of /proc/self/status)."""
    text = Path("/proc/self/status").read_text() if status is None else status
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return frozenset(
                f"CAP_{name}" for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1
            )
    raise ValueError("no CapBnd line in /proc/self/status")


def last_capability(path: Path = Path("/proc/sys/kernel/cap_last_cap")) -> int:
    """The highest capability bit this kernel knows (older kernels lack PERFMON, BPF...)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def missing_capabilities(status: str | None = None, last: int | None = None) -> list[str]:
    """Capabilities this kernel knows (Docker asks for those) that the host cannot grant."""
    have = bounding_set(status)
    last = last_capability() if last is None else last
    known = CAPABILITIES[: last + 1]
    return [f"CAP_{n}" for n in known if f"CAP_{n}" not in have]


def filter_process(process: dict, allowed: frozenset[str]) -> list[str]:
    """Drop capabilities outside ``allowed`` from an OCI ``process`` object; return them."""
    caps = process.get("capabilities") or {}
    dropped: set[str] = set()
    for name in _SETS:
        values = caps.get(name)
        if isinstance(values, list):
            caps[name] = [c for c in values if c in allowed]
            dropped.update(c for c in values if c not in allowed)
    return sorted(dropped)


def _rewrite(path: Path, key: str | None, allowed: frozenset[str]) -> None:
    spec = json.loads(path.read_text())
    process = spec.get(key) if key else spec
    if isinstance(process, dict) and filter_process(process, allowed):
        tmp = path.with_name(path.name + ".bounded")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, path)


def _option(argv: list[str], *names: str) -> str | None:
    """The value of ``--name VALUE`` / ``--name=VALUE`` / ``-n VALUE`` in runc's argv."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _subcommand(argv: list[str]) -> str | None:
    for arg in argv:
        if arg in ("create", "run", "exec"):
            return arg
    return None


def rewrite_for(argv: list[str], allowed: frozenset[str], cwd: Path) -> None:
    """Filter the capabilities of the spec runc is about to use for this command line."""
    command = _subcommand(argv)
    if command in ("create", "run"):
        bundle = Path(_option(argv, "--bundle", "-b") or cwd)
        _rewrite(bundle / "config.json", "process", allowed)
    elif command == "exec":
        process_file = _option(argv, "--process", "-p")
        if process_file:
            _rewrite(Path(process_file), None, allowed)


def main() -> None:
    argv = sys.argv[1:]
    try:
        rewrite_for(argv, bounding_set(), Path.cwd())
    except (OSError, ValueError) as exc:  # let runc report on its own input
        print(f"runc-bounded-caps: spec left as is: {exc}", file=sys.stderr)
    real = os.environ.get(REAL_RUNC_ENV, DEFAULT_REAL_RUNC)
    os.execv(real, [real, *argv])


if __name__ == "__main__":
    main()
