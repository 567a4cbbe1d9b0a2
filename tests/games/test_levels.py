"""Levels, generation, manifests and the batched environment, on real compiled games."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import games
from games.generation import file_id
from games.levels import get_level
from workbench.errors import WorkbenchError

# The public GATA level table: recipe size, rooms, cut, cook, max score.
GATA = {
    1: (1, 1, False, False, 3),
    2: (1, 1, False, True, 4),
    3: (1, 1, True, False, 4),
    4: (1, 6, False, False, 3),
    5: (1, 9, False, False, 3),
    6: (1, 12, False, False, 3),
    7: (1, 1, True, True, 5),
    8: (3, 6, False, False, 5),
    9: (3, 6, True, True, 11),
    10: (3, 12, True, True, 11),
}


@pytest.mark.parametrize("level", sorted(GATA))
def test_level_maps_to_tw_cooking_options(level):
    recipe, rooms, cut, cook, _ = GATA[level]
    settings = get_level(level).tw_cooking_settings("valid")
    assert settings["recipe"] == recipe and settings["take"] == recipe
    assert settings["go"] == rooms and settings["open"] == (rooms > 1)
    assert settings["cut"] == cut and settings["cook"] == cook
    assert settings["split"] == "valid"


def test_every_level_compiles_with_the_gata_max_score(level_games):
    assert {lvl: g.max_score for lvl, g in level_games.items()} == {
        lvl: row[4] for lvl, row in GATA.items()
    }
    assert all(g.level == lvl and g.split == "train" for lvl, g in level_games.items())


@pytest.mark.parametrize("bad", [0, 11, -1])
def test_unknown_level_is_a_user_error(bad, tmp_path):
    with pytest.raises(WorkbenchError, match="levels are 1-10"):
        games.make(level=bad, count=1, seed=0, split="train", out=tmp_path / "g")
    assert not (tmp_path / "g").exists()


def test_bad_count_and_split_write_nothing(tmp_path):
    with pytest.raises(WorkbenchError, match="count must be at least 1"):
        games.make(level=1, count=0, seed=0, split="train", out=tmp_path / "g")
    with pytest.raises(WorkbenchError, match="unknown split"):
        games.make(level=1, count=1, seed=0, split="dev", out=tmp_path / "g")
    assert not (tmp_path / "g").exists()


def _make_in_a_process(hash_seed: str, out: Path) -> subprocess.Popen:
    code = (
        "import json, sys, games; "
        "made = games.make(level=1, count=1, seed=11, split='train', out=sys.argv[1]); "
        "print(json.dumps([g.id for g in made.added + made.existing]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )


@pytest.mark.slow
def test_same_seed_same_game_in_any_process(level1_games, tmp_path):
    # TextWorld's generation depends on the hash seed and Inform stamps the date into the
    # file: two processes with different hash seeds (and this one, with its own) must still
    # make the same file, hence the same id.
    children = {h: _make_in_a_process(h, tmp_path / f"hash{h}") for h in ("1", "2")}
    ids = {}
    for h, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        ids[h] = json.loads(out)
    assert ids["1"] == ids["2"] == [level1_games[0].id]
    made = [(tmp_path / f"hash{h}" / f"{ids[h][0]}.z8").read_bytes() for h in ("1", "2")]
    assert made[0] == made[1] == level1_games[0].path.read_bytes()
    assert made[0][0x12:0x18] == b"000000"  # the serial, not the compile date
    # A second make into the same folder adds nothing.
    again = games.make(level=1, count=1, seed=11, split="train", out=tmp_path / "hash1")
    assert again.added == [] and [g.id for g in again.existing] == ids["1"]


def test_make_adds_to_a_folder(level1_games, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(level1_games[0].path.parent, folder)  # the session's two level-1 games
    repeat = games.make(level=1, count=1, seed=11, split="train", out=folder)
    assert repeat.added == [] and [g.id for g in repeat.existing] == [level1_games[0].id]
    more = games.make(level=2, count=1, seed=5, split="test", out=folder)
    listed = games.list_games(folder)
    assert len(listed) == 3 and listed[-1].id == more.added[0].id
    assert [(g.level, g.split, g.max_score) for g in listed] == [
        (1, "train", 3),
        (1, "train", 3),
        (2, "test", 4),
    ]
    tw_settings = json.loads(listed[2].path.with_suffix(".json").read_text())["metadata"]
    assert tw_settings["settings"]["split"] == "test" and tw_settings["settings"]["cook"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [g["id"] for g in manifest["games"]] == [g.id for g in listed]
    for g in listed:  # the id is the hash of the file it names
        assert g.id == file_id(g.path) and g.path.name == f"{g.id}.z8"
    assert not list(folder.glob(".making-*"))


def test_list_games_rejects_what_is_not_a_game_set(tmp_path, level1_games):
    with pytest.raises(WorkbenchError, match="does not exist"):
        games.list_games(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="no games in"):
        games.list_games(tmp_path / "empty")
    junk = tmp_path / "notes.z8"
    junk.write_text("this is not a story file, just some text that is long enough " * 3)
    with pytest.raises(WorkbenchError, match="not a compiled TextWorld game"):
        games.list_games(junk)
    # A single compiled game file is a game set of one, read from its .json.
    one = games.list_games(level1_games[0].path)
    assert one[0].id == level1_games[0].id and one[0].level == 1 and one[0].max_score == 3


def test_batch_env_steps_games_independently_in_and_out_of_process(level1_games):
    a, b = level1_games
    results = []
    for workers in (0, 2):
        with games.BatchEnv(parallel=2, workers=workers) as env:
            start = env.reset({0: a.path, 1: b.path})
            assert "cookbook" in start[0].objective
            assert start[0].walkthrough and start[0].facts and start[0].admissible_commands
            walk = start[0].walkthrough
            for command in walk:
                states = env.step({0: command, 1: "inventory"})
            results.append((states[0].won, states[0].score, states[1].score, states[1].moves))
    assert results[0] == results[1] == (True, 3, 0, len(walk))
