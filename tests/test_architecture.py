"""The import contracts in pyproject.toml ([tool.importlinter]) hold: the layers
workbench.cli > streamlit_app > agents > explainers | games > workbench core, TextWorld only
in games and DuckDB only in workbench.store. A new import that runs back up a layer fails
the suite here, with lint-imports' report of the offending chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


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
