"""A clear error when a folder shadows one of the workbench's packages.

Python looks a top-level name up along `sys.path`, whose first entry is the current
directory (or the script's). A regular package (a folder with `__init__.py`) found anywhere
on the path wins over a folder without one; such a folder becomes a namespace package only
when nothing else on the path has the name. An editable install finds the workbench's
packages through a finder that Python asks only after the whole path, so a game-set folder
named `games/` in the current directory becomes an empty namespace package `games`, and
`games.make` is missing. A regular package of the same name earlier on the path shadows
ours under any kind of install.

`guard_packages` (run when `workbench` is imported, which every package does first or
early) turns both into an `ImportError` that names the folder: for the packages already
imported, and, through a finder placed before all others, for those imported later.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGES = ("workbench", "explainers", "games", "agents", "streamlit_app")
_ROOT = Path(__file__).resolve().parent.parent


class ShadowedPackageError(ImportError):
    """A folder that is not the workbench's package is imported under its name."""


def _problem(name: str, spec: importlib.machinery.ModuleSpec | None) -> str | None:
    ours = _ROOT / name / "__init__.py"
    if spec is None or not ours.is_file():
        return None
    fix = "rename that folder (game sets can live in game-sets/) or run Python from another folder"
    if spec.origin is None:
        folders = ", ".join(f"'{p}'" for p in spec.submodule_search_locations or [])
        return f"the folder {folders} shadows the workbench's `{name}` package; {fix}"
    if Path(spec.origin).resolve() != ours:
        return (
            f"the folder '{Path(spec.origin).parent}' shadows the workbench's `{name}` "
            f"package (in '{ours.parent}'); {fix}"
        )
    return None


class _Guard(importlib.abc.MetaPathFinder):
    """Asked first for every import: refuses our package names where the path would give
    another folder, and otherwise leaves the import to the usual finders."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None and fullname in PACKAGES:
            problem = _problem(fullname, importlib.machinery.PathFinder.find_spec(fullname))
            if problem is not None:
                raise ShadowedPackageError(problem, name=fullname)
        return None


def guard_packages() -> None:
    """Fail with the folder's name if one of our packages was, or would be, imported from a
    folder that shadows it."""
    for name in PACKAGES:
        module = sys.modules.get(name)
        if module is not None:
            problem = _problem(name, getattr(module, "__spec__", None))
            if problem is not None:
                raise ShadowedPackageError(problem, name=name)
    if not any(isinstance(finder, _Guard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Guard())
