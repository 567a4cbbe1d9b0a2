"""Compiled test games, made once per test session and shared by every test package.

Compiling a game takes a few seconds, so each (level, seed, split) set is made once into the
session's base temp folder and reused: `games.make` is reproducible by seed and skips the
seeds a folder already holds, so asking for more games of a set only compiles the new ones.
The seeds here are the tests' own; benchmarks use others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import games

TEST_SEED = 11


def compiled(
    base: Path,
    level: int | list[int],
    count: int = 1,
    seed: int = TEST_SEED,
    split: str = "train",
    jobs: int = 1,
) -> list[games.GameInfo]:
    """The first `count` games (of each level) of a (seed, split) set, compiled on first use."""
    levels = [level] if isinstance(level, int) else level
    name = "-".join(str(n) for n in levels)
    folder = base / "compiled-games" / f"l{name}-s{seed}-{split}"
    made = games.make(level=levels, count=count, seed=seed, split=split, out=folder, jobs=jobs)
    order = {g.id: i for i, g in enumerate(games.list_games(folder))}
    return sorted(made.added + made.existing, key=lambda g: order[g.id])


@pytest.fixture(scope="session")
def games_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def level1_games(games_base) -> list[games.GameInfo]:
    """Two level-1 games (the quickest to play)."""
    return compiled(games_base, 1, 2)


@pytest.fixture(scope="session")
def compiled_sets(games_base, level1_games) -> dict[int, list[games.GameInfo]]:
    """Level 1: two games; levels 2-10: one game each, made by one generating process
    (TextWorld's start-up is most of a game's cost) in two workers."""
    others = compiled(games_base, [level for level in games.LEVELS if level != 1], jobs=2)
    return {1: level1_games, **{g.level: [g] for g in others}}


@pytest.fixture(scope="session")
def level_games(compiled_sets) -> dict[int, games.GameInfo]:
    """One compiled game per level 1-10."""
    return {level: found[0] for level, found in compiled_sets.items()}
