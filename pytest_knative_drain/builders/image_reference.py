"""The image reference grammar, checked before a run so a typo ends it at once instead of
in every case. Pure text: no registry is asked and no Docker is needed."""

from __future__ import annotations

import re

# Docker image reference grammar (github.com/distribution/reference, regexp.go).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_NAME_MAX = 255


def check_image_reference(reference: str) -> str:
    """``reference`` if Docker would parse it, else ValueError saying what one looks like.

    Syntax only (no registry is asked): a typo ends the run here instead of in every case.
    """
    found = _REFERENCE.fullmatch(reference)
    if found is None or len(found.group("name")) > _NAME_MAX:
        raise ValueError(
            "not an image reference; use [registry[:port]/]name[:tag][@sha256:digest] with a "
            "lowercase name, e.g. registry.example.com/team/app:1"
        )
    return reference
