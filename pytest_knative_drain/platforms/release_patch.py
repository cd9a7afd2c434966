"""The patch a platform that builds Knative here runs when the user named only a minor.

``--knative-version=1.21`` means 1.21's newest patch, 1.21.3; the filtering module proxy
here refuses ``knative.dev/serving@v0.48.3`` and serves v0.48.2. A build platform (local,
kind built here) then runs 1.21.2 and says so, instead of failing at the build; a patch
the user named is never replaced (its build fails naming the nearest one).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..builders.knative import SERVING, served_patch
from ..knative import catalog


@dataclass(frozen=True)
class PatchChoice:
    """The release to run, and why it is not the one the minor names (None: it is)."""

    release: catalog.Release
    substituted: str | None = None


def buildable(release: catalog.Release, requested: str) -> PatchChoice:
    """``release``, or the newest patch of its minor the module proxy serves when
    ``requested`` named only the minor and the proxy refuses ``release``'s module."""
    if catalog.names_patch(requested):
        return PatchChoice(release)
    wanted = release.go_module_version
    used, why = served_patch(wanted)
    if used is None or used == wanted:
        return PatchChoice(release)
    patch = used.rsplit(".", 1)[1]
    chosen = catalog.resolve(f"{release.minor}.{patch}")
    return PatchChoice(
        chosen,
        f"Knative {release.version}: {why}; {chosen.version} ({SERVING}@{used}) is the newest "
        f"{release.minor} patch it serves",
    )
