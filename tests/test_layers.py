"""The package's layout holds: one folder per layer, imports only downwards, no warehouses.

A module may import its own folder and the folders on lower floors; the package top holds
only the pytest face and the CLI. Imports under ``if TYPE_CHECKING:`` are annotations, not
dependencies, and are not counted. Each rule has a twin below that proves the check fails
on a tree that breaks it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_knative_drain"
#: lowest first; folders on one floor do not import each other
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"load"}),
    frozenset({"host"}),
    frozenset({"knative", "builders", "matrix"}),
    frozenset({"platforms"}),
    frozenset({"run"}),
    frozenset({"evidence"}),
)
TOP = frozenset({"__init__", "plugin", "fixtures", "options", "interrupts", "cli"})
#: longer than this, a module's docstring must say why it is one file ("one file: ...")
MAX_LINES = 550


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted, relative to the package
    line: int
    target: str  # the imported module, dotted, relative to the package ("" = its root)


def _floor(module: str) -> int:
    folder = module.split(".", 1)[0] if "." in module else None
    for i, names in enumerate(FLOORS):
        if folder in names:
            return i
    return len(FLOORS)  # the top


def _folder(module: str) -> str:
    return module.split(".", 1)[0] if "." in module else ""


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(n) for n in ast.walk(node)}
    return found


def imports(root: Path) -> list[Import]:
    """Every import of the package by one of its own modules, outside TYPE_CHECKING."""
    out: list[Import] = []
    name = root.name
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        module = ".".join(parts)  # a folder's own __init__ is "<folder>.__init__"
        package = parts[:-1]
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                    dotted = ".".join([*base, *([node.module] if node.module else [])])
                elif node.module and (node.module == name or node.module.startswith(name + ".")):
                    dotted = node.module[len(name) + 1 :]
                else:
                    continue
                for alias in node.names:  # `from . import x` imports the module x
                    sub = f"{dotted}.{alias.name}" if dotted else alias.name
                    is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or (
                        root / Path(*sub.split("."))
                    ).is_dir()
                    targets.append(sub if is_module else dotted)
            elif isinstance(node, ast.Import):
                targets = [
                    a.name[len(name) + 1 :] for a in node.names if a.name.startswith(name + ".")
                ]
            for target in targets:  # a folder stands for its __init__
                is_folder = target and (root / Path(*target.split("."))).is_dir()
                out.append(
                    Import(module, node.lineno, f"{target}.__init__" if is_folder else target)
                )
    return out


def violations(root: Path) -> list[str]:
    """Imports that go up a floor or sideways to another folder on the same floor."""
    bad = []
    for imp in imports(root):
        if imp.target in ("", "__init__"):  # the package root: __version__
            continue
        src, dst = _floor(imp.module), _floor(imp.target)
        same_folder = _folder(imp.module) == _folder(imp.target) and _folder(imp.module)
        if same_folder or src == len(FLOORS):
            if src == len(FLOORS) and dst == len(FLOORS) and _folder(imp.module):
                bad.append(f"{imp.module}:{imp.line} imports {imp.target}")
            continue
        if dst >= src:
            bad.append(f"{imp.module}:{imp.line} imports {imp.target} (floor {dst} >= {src})")
    return bad


def misplaced(root: Path) -> list[str]:
    """Modules at the package top that are not the pytest face or the CLI, and folders
    that are no layer."""
    known = set().union(*FLOORS)
    out = [p.name for p in root.glob("*.py") if p.stem not in TOP]
    out += [
        p.name
        for p in root.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in known
    ]
    return sorted(out)


def warehouses(root: Path) -> list[str]:
    """Modules over MAX_LINES whose docstring does not say why they are one file, and
    modules with no docstring at all (each says what it owns)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        rel = path.relative_to(root)
        if not doc.strip():
            out.append(f"{rel}: no docstring saying what it owns")
        elif len(text.splitlines()) > MAX_LINES and "one file:" not in doc:
            out.append(
                f"{rel}: {len(text.splitlines())} lines, no 'one file: why' in its docstring"
            )
    return out


def test_imports_only_go_down_the_floors() -> None:
    found = imports(PACKAGE)
    assert len(found) > 100  # the walk saw the package's imports at all
    edges = {(i.module, i.target) for i in found}
    assert ("run.runner", "load.__init__") in edges  # `from .. import load`
    assert ("platforms.cluster.changes", "host.signals") in edges  # `from ...host.signals`
    assert violations(PACKAGE) == []


def test_the_package_top_holds_only_the_pytest_face_and_the_cli() -> None:
    assert misplaced(PACKAGE) == []


def test_no_module_is_a_warehouse() -> None:
    assert warehouses(PACKAGE) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pytest_knative_drain"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


GOOD = {
    "__init__.py": '"""root"""\n',
    "plugin.py": '"""hooks"""\nfrom .run import verdict\n',
    "load/__init__.py": '"""load"""\n',
    "load/engine.py": '"""engine"""\n',
    "run/__init__.py": '"""run"""\n',
    "run/verdict.py": '"""verdict"""\nfrom ..load import engine\nfrom . import other\n',
    "run/other.py": '"""other"""\n',
    "evidence/__init__.py": '"""evidence"""\n',
    "evidence/report.py": (
        '"""report"""\nfrom typing import TYPE_CHECKING\nfrom .. import __version__\n'
        "if TYPE_CHECKING:\n    from ..options import DrainOptions\n"
    ),
}


def test_a_good_tree_passes_every_check(tmp_path: Path) -> None:
    pkg = _tree(tmp_path, GOOD)
    assert violations(pkg) == [] and misplaced(pkg) == [] and warehouses(pkg) == []


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        (
            "load/engine.py",
            '"""e"""\nfrom ..run import verdict\n',
            "load.engine:2 imports run.verdict",
        ),
        (
            "load/engine.py",
            '"""e"""\nfrom pytest_knative_drain.plugin import x\n',
            "load.engine:2 imports plugin",
        ),
        (
            "run/verdict.py",
            '"""v"""\ndef f():\n    from ..evidence import report\n',
            "run.verdict:3",
        ),
        (
            "host/__init__.py",
            '"""h"""\nfrom ..knative import catalog\n',
            "host.__init__:2 imports knative",
        ),
    ],
)
def test_an_upward_import_is_caught(tmp_path: Path, rel: str, text: str, expected: str) -> None:
    files = {**GOOD, "knative/__init__.py": '"""k"""\n', "knative/catalog.py": '"""c"""\n'}
    pkg = _tree(tmp_path, {**files, rel: text})
    assert any(v.startswith(expected) for v in violations(pkg)), violations(pkg)


def test_a_sideways_import_on_one_floor_is_caught(tmp_path: Path) -> None:
    files = {
        **GOOD,
        "matrix/__init__.py": '"""m"""\n',
        "matrix/scenarios.py": '"""s"""\nfrom ..builders import images\n',
        "builders/__init__.py": '"""b"""\n',
        "builders/images.py": '"""i"""\n',
    }
    assert violations(_tree(tmp_path, files)) == [
        "matrix.scenarios:2 imports builders.images (floor 2 >= 2)"
    ]


def test_a_stray_module_or_folder_at_the_top_is_caught(tmp_path: Path) -> None:
    files = {**GOOD, "verdict.py": '"""v"""\n', "misc/__init__.py": '"""m"""\n'}
    assert misplaced(_tree(tmp_path, files)) == ["misc", "verdict.py"]


def test_a_warehouse_and_a_module_without_docstring_are_caught(tmp_path: Path) -> None:
    big = '"""Everything."""\n' + "x = 1\n" * MAX_LINES
    why = '"""Everything.\n\none file: the state machine reads as one."""\n' + "x = 1\n" * MAX_LINES
    pkg = _tree(tmp_path, {**GOOD, "run/big.py": big, "run/why.py": why, "run/bare.py": "x = 1\n"})
    assert warehouses(pkg) == [
        "run/bare.py: no docstring saying what it owns",
        f"run/big.py: {MAX_LINES + 1} lines, no 'one file: why' in its docstring",
    ]
