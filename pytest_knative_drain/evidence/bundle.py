"""The certification bundle: a run's evidence in one directory and one ``.tar.gz``.

What a submission carries, as Kubernetes conformance asks of a vendor (``PRODUCT.yaml``,
JUnit, the log) and knative/specs of a Knative one (raw test logs): the markdown report as
README.md, PRODUCT.yaml, the run JSON, JUnit, the pytest log, the session record (what
was collected, deselected, skipped and why, the plugins loaded), the environment, the pod
logs of failed cases, and SHA256SUMS over all of it. ``evidence/verify.py`` checks one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import yaml

from .compare import case_id
from .report import write_atomic

SUMS = "SHA256SUMS"
REQUIRED = (
    "README.md",
    "PRODUCT.yaml",
    "drain-report.json",
    "junit.xml",
    "pytest.log",
    "session.json",
    "environment.json",
)
#: what a product must say (Kubernetes conformance's PRODUCT.yaml, less its logo)
PRODUCT_FIELDS = (
    "vendor",
    "name",
    "version",
    "type",
    "description",
    "website_url",
    "documentation_url",
    "contact_email_address",
)
PRODUCT_TYPES = ("distribution", "hosted", "installer")


class BundleError(ValueError):
    """A --product file or a bundle directory that cannot be used; the message says why."""


def read_product(path: Path) -> dict[str, Any]:
    """The ``--product`` file: a YAML mapping with every :data:`PRODUCT_FIELDS` filled."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BundleError(f"cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise BundleError("not a YAML mapping of the product's fields")
    missing = [f for f in PRODUCT_FIELDS if not str(data.get(f) or "").strip()]
    if missing:
        raise BundleError(f"fields missing or empty: {', '.join(missing)}")
    if data["type"] not in PRODUCT_TYPES:
        raise BundleError(f"type: {data['type']!r}; accepted: {', '.join(PRODUCT_TYPES)}")
    return data


def product_yaml(product: dict[str, Any] | None, knative_version: str) -> str:
    """PRODUCT.yaml: the user's product with the Knative version the run measured, or a
    template to fill in (``template: true``, which ``verify`` reports)."""
    if product is not None:
        return yaml.safe_dump({**product, "knative_version": knative_version}, sort_keys=False)
    fields = "\n".join(f'{f}: ""' for f in PRODUCT_FIELDS if f != "type")
    return (
        "# The product this run certifies: fill in every field and run again with\n"
        "# --product FILE (type: distribution, hosted or installer).\n"
        f"template: true\ntype: distribution\n{fields}\nknative_version: {knative_version}\n"
    )


def environment(report: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    """Versions, nodes and provider: the report's facts and the session's software."""
    keys = ("platform", "knative", "kubernetes", "ingress", "environment", "machine")
    return {
        **{k: report.get(k) for k in keys},
        "commit": report.get("commit"),
        "tool": report.get("tool"),
        "python": session.get("python"),
        "pytest": session.get("pytest"),
        "plugins": session.get("plugins"),
    }


def pod_logs(report: dict[str, Any]) -> dict[str, str]:
    """``pod-logs/<case>/<container>.log`` of every case that kept its pod's logs."""
    out: dict[str, str] = {}
    for s in report.get("scenarios", []):
        case = case_id(s)
        for container, text in (s.get("logs") or {}).items():
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(container))
            out[f"pod-logs/{case}/{name}.log"] = str(text)
    return out


def checksums(root: Path) -> str:
    """``sha256sum`` lines of every file under ``root`` but :data:`SUMS`, sorted by path."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != SUMS):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    return "".join(lines)


def check_destination(dest: Path) -> None:
    """BundleError unless ``dest`` is new, empty, or an earlier bundle (it is replaced)."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise BundleError(f"{dest} is a file; give a directory path")
    if any(dest.iterdir()) and not (dest / SUMS).is_file():
        raise BundleError(
            f"{dest} holds files and is no earlier bundle (no {SUMS}); give a new directory"
        )


def write_bundle(dest: Path, files: dict[str, str]) -> tuple[Path, Path]:
    """``dest``/ with ``files`` (relative path -> text) and SHA256SUMS, and ``dest``.tar.gz.

    An earlier bundle at ``dest`` is replaced (a bundle is one run's, never a mix); any
    other directory with files in it is never touched (:func:`check_destination`).
    """
    check_destination(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for rel, text in files.items():
        write_atomic(dest / rel, text)
    write_atomic(dest / SUMS, checksums(dest))
    archive = dest.with_name(dest.name + ".tar.gz")
    part = archive.with_name(archive.name + ".part")
    with tarfile.open(part, "w:gz") as tar:
        tar.add(dest, arcname=dest.name)
    part.replace(archive)
    return dest, archive


def bundle_files(
    report: dict[str, Any],
    markdown: str,
    junit: str,
    log: str,
    session: dict[str, Any],
    product: dict[str, Any] | None,
) -> dict[str, str]:
    """Every file of a bundle but SHA256SUMS, from one run's evidence."""
    version = (report.get("knative") or {}).get("version", "")
    return {
        "README.md": markdown,
        "PRODUCT.yaml": product_yaml(product, version),
        "drain-report.json": json.dumps(report, indent=2, default=str),
        "junit.xml": junit,
        "pytest.log": log,
        "session.json": json.dumps(session, indent=2, default=str),
        "environment.json": json.dumps(environment(report, session), indent=2, default=str),
        **pod_logs(report),
    }
