"""The docs build strictly, so a broken link or a page left out of the nav fails here; the
README stays short, opens with the two commands, and its twin docs/index.md matches it.

Each build check has a twin: the same docs with one defect must fail to build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND_1 = (
    "scripts/bootstrap && python3 -m pytest conformance --platform=local --knative-version=1.14"
)
COMMAND_2 = "scripts/bootstrap --tests && python3 -m pytest"


def _build(project: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project)
    shutil.copytree(ROOT / "docs", project / "docs")
    return project


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    built = _build(ROOT, tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    assert len(pages) >= 9
    for page in pages:
        html = tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), page


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    page = project / "docs" / "verdict.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    built = _build(project, tmp_path)
    assert built.returncode != 0
    assert "no-such-page.md" in built.stdout + built.stderr


def test_a_page_left_out_of_the_nav_fails_the_build(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    (project / "docs" / "orphan.md").write_text("# An orphan\n")
    built = _build(project, tmp_path)
    assert built.returncode != 0
    assert "orphan.md" in built.stdout + built.stderr


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    commands = [line for line in text.splitlines() if line.startswith("scripts/bootstrap")]
    assert commands[:2] == [COMMAND_1, COMMAND_2]
    # CI runs the test command written in README.md
    assert COMMAND_2 in (ROOT / ".ci" / "run").read_text()


def test_docs_index_is_the_readme_with_its_links_inside_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "index.md").read_text() == readme.replace("](docs/", "](")


def test_every_docs_link_in_the_readme_names_a_page() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = re.findall(r"\]\(docs/([^)#]+)", readme)
    assert linked, "the README links to no docs page"
    for page in linked:
        assert (ROOT / "docs" / page).is_file(), page
