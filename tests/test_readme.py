"""The README's Python snippet, run as a user runs it: twice, from the same folder.

The second run is the one that used to fail: the snippet's game-set folder must not shadow
the `games` package, and making the same games again must add none.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_the_python_snippet_runs_twice_in_one_folder(tmp_path):
    script = tmp_path / "snippet.py"
    count = "\nprint('games:', len(games.list_games('game-sets/l1')))\n"
    script.write_text(python_snippet() + count)
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("WORKBENCH_DB", None)
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"run {run}:\n{done.stderr[-3000:]}"
        assert "games: 2" in done.stdout, done.stdout[-2000:]
    assert (tmp_path / "workbench.duckdb").is_file()
    assert not (tmp_path / "games").exists()
