"""The package architecture holds.

1. The import contracts in pyproject.toml ([tool.importlinter]) hold: the layers
workbench.cli > streamlit_app > agents > explainers | games > workbench core, TextWorld only
in games and DuckDB only in workbench.store. A new import that runs back up a layer fails
the suite here, with lint-imports' report of the offending chain.

2. No import cycle inside a top-level package, counting every import the code can run. The
layer contract (pyproject.toml, import-linter) orders the packages; this test orders the
modules inside each one. It reads every module's syntax tree, so imports inside functions
and under `TYPE_CHECKING` count as much as those at the top: a lazy import still ties the
two modules together. A module that imports a package imports its `__init__`. Importing
`a.b` is an edge to `a.b` alone: the package `a` that Python runs first is not counted, as
a package's `__init__` may re-export its modules (that is the usual shape of a package, and
its modules do not need the package's names).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "explainers", "agents", "games", "streamlit_app")


def test_import_contracts_are_kept():
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
        + ["--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (packages as __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The first-party modules `name` imports, each with the line of its first import."""
    found: dict[str, int] = {}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..a import b`
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from a import b` imports the module a.b if there is one, else names of a.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in modules:
                found.setdefault(target, node.lineno)
    return found


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search, in name order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """`a.py:12 -> b.py:3 -> a.py`: each module and the line that imports the next."""
    steps = [
        f"{modules[a].relative_to(ROOT)}:{graph[a][b]} imports {b}"
        for a, b in zip(cycle, cycle[1:])
    ]
    return "import cycle:\n  " + "\n  ".join(steps)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    modules = module_files()
    inside = {m for m in modules if m == package or m.startswith(package + ".")}
    graph = {
        m: {t: line for t, line in imports_of(m, modules[m], modules).items() if t in inside}
        for m in inside
    }
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, modules)


def test_the_cycle_finder_sees_lazy_and_type_checking_imports(tmp_path):
    # The test above must be able to fail: a cycle made only of a function-local import and
    # a TYPE_CHECKING import is found, and reported with its lines.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    files = {
        "pkg": tmp_path / "pkg" / "__init__.py",
        "pkg.a": tmp_path / "pkg" / "a.py",
        "pkg.b": tmp_path / "pkg" / "b.py",
    }
    graph = {m: imports_of(m, p, files) for m, p in files.items()}
    assert graph["pkg.a"] == {"pkg.b": 2} and graph["pkg.b"] == {"pkg.a": 3}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
