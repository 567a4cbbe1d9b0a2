"""Compiled test games, made once per test session and shared by every test package.

Compiling a game takes about two seconds, so each (level, count, seed) set is made once
into the session's base temp folder and reused (`games.make` is reproducible by seed).
The seeds here are the tests' own; benchmarks use others.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import games

TEST_SEED = 11


def compiled(base: Path, level: int, count: int = 1, seed: int = TEST_SEED) -> list:
    folder = base / "compiled-games" / f"l{level}-n{count}-s{seed}"
    if not (folder / "manifest.json").is_file():
        games.make(level=level, count=count, seed=seed, split="train", out=folder)
    return games.list_games(folder)


@pytest.fixture(scope="session")
def games_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def compiled_sets(games_base) -> dict[int, list[games.GameInfo]]:
    """Level 1: two games (the quickest to play); levels 2-10: one game each. Made in two
    processes, since compiling is mostly CPU-bound."""
    counts = {level: 2 if level == 1 else 1 for level in games.LEVELS}
    with ProcessPoolExecutor(max_workers=2) as pool:
        made = pool.map(compiled, [games_base] * len(counts), list(counts), list(counts.values()))
        return dict(zip(counts, made))


@pytest.fixture(scope="session")
def level_games(compiled_sets) -> dict[int, games.GameInfo]:
    """One compiled game per level 1-10."""
    return {level: found[0] for level, found in compiled_sets.items()}


@pytest.fixture(scope="session")
def level1_games(compiled_sets) -> list[games.GameInfo]:
    return compiled_sets[1]
