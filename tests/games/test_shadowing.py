"""A `games/` folder in the working directory (a game set made with `--out games/...`) must
not silently replace the `games` package: the import fails with the folder's name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import games

OURS = Path(games.__file__).resolve()


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _game_set(folder: Path, level1_games) -> Path:
    folder.mkdir()
    shutil.copy(level1_games[0].path, folder)
    shutil.copy(level1_games[0].path.with_suffix(".json"), folder)
    return folder


def test_a_game_set_named_games_is_refused_with_its_folder(tmp_path, level1_games):
    folder = _game_set(tmp_path / "games", level1_games)
    # Without __init__.py the folder is only a namespace package, which loses to a regular
    # `games` package on the path; it shadows ours where the install is reached through a
    # finder after the path (an editable install). Ask a clean interpreter which it is.
    on_path = python(
        "import importlib.machinery as m; print(m.PathFinder.find_spec('games') is not None)",
        tmp_path.parent,
    )
    shadowed = on_path.stdout.strip() == "False"
    message = (
        f"ShadowedPackageError: the folder '{folder}' shadows the workbench's `games` package; "
        "rename that folder (game sets can live in game-sets/) or run Python from another folder"
    )
    for code in ("import games, agents", "import workbench.store; import games"):
        done = python(f"{code}; print(games.__file__)", tmp_path)
        if shadowed:
            assert done.returncode == 1 and done.stderr.strip().endswith(message), done.stderr
        else:
            assert done.returncode == 0 and done.stdout.strip() == str(OURS), done.stderr
    # Under another name the same folder is a game set like any other.
    folder.rename(tmp_path / "game-sets")
    done = python("import games, agents; print(games.list_games('game-sets')[0].id)", tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == level1_games[0].id, done.stderr


def test_a_games_package_in_the_working_directory_is_refused(tmp_path):
    # A regular package comes first on the path under any install, so it always shadows.
    (tmp_path / "games").mkdir()
    (tmp_path / "games" / "__init__.py").write_text("")
    done = python("import games, agents", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"ShadowedPackageError: the folder '{tmp_path / 'games'}' shadows the workbench's "
        f"`games` package (in '{OURS.parent}'); rename that folder (game sets can live in "
        "game-sets/) or run Python from another folder"
    ), done.stderr
