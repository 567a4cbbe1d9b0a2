"""Library errors name parameters, not command-line flags: the library is also called from
notebooks and the dashboard, where `--device-map` means nothing; the CLI names its flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The dashboard (streamlit_app) is an application, started by `workbench dashboard`.
LIBRARY = ("workbench", "explainers", "agents", "games")
FLAG = re.compile(r"(?<![\w-])--[a-z]")  # `--device`, not `a--b` or a `---` rule


def library_files() -> list[Path]:
    files = [p for package in LIBRARY for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if (ROOT / "workbench" / "cli") not in p.parents]


def error_messages(tree: ast.AST) -> set[tuple[int, str]]:
    """The string parts of what is raised, and of every `...Error(...)`/`...Exception(...)`
    built (a message may be made before it is raised)."""
    found = set()
    for node in ast.walk(tree):
        built = None
        if isinstance(node, ast.Raise) and node.exc is not None:
            built = node.exc
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            if name.endswith(("Error", "Exception")):
                built = node
        if built is not None:
            for part in ast.walk(built):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.add((part.lineno, part.value))
    return found


def test_the_scan_sees_flags_in_raised_messages():
    source = 'def f(x):\n    raise ValueError(f"unknown --device-map {x!r}")\n'
    assert [text for _, text in error_messages(ast.parse(source)) if FLAG.search(text)]
    assert not FLAG.search("cannot score; use select='generate'")


def test_no_library_error_names_a_command_line_flag():
    assert len(library_files()) > 50  # the scan reads the packages, not an empty folder
    offenders = []
    for path in library_files():
        for line, text in sorted(error_messages(ast.parse(path.read_text(encoding="utf-8")))):
            if FLAG.search(text):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text.strip()}")
    assert not offenders, "\n".join(offenders)
