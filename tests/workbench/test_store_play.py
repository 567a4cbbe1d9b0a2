"""The play tables: one transaction per episode, no duplicates, round trips."""

from __future__ import annotations

import duckdb
import pytest

from tests import store_reads
from workbench.store import play as play_store
from workbench.store import runs

RUN = {"id": "run1", "name": "r", "params": {"agent": "random"}}
GAME = {
    "id": "g1",
    "path": "/games/g1.z8",
    "level": 2,
    "split": "train",
    "seed": 5,
    "max_score": 4,
    "walkthrough_steps": 6,
    "ingredients": ["carrot"],
}


def _episode(eid: str = "e1", trial: int = 0) -> dict:
    return {
        "id": eid,
        "trial": trial,
        "condition": "tips",
        "agent": "llm",
        "tips": ["Open the fridge."],
        "won": True,
        "lost": False,
        "score": 4,
        "max_score": 4,
        "moves": 2,
        "stop_reason": "won",
        "invalid_actions": 0,
        "prompt_tokens": 30,
        "completion_tokens": 3,
        "seconds": 0.5,
    }


def _steps(n: int = 2) -> list[dict]:
    return [
        {
            "idx": i,
            "observation": f"obs {i}",
            "admissible": ["look", "eat meal"],
            "facts": ["at(P, kitchen)"],
            "action": "eat meal",
            "raw_output": "eat meal",
            "valid": True,
            "reward": 2,
            "score": 2 * (i + 1),
            "feedback": "ok",
            "done": i == n - 1,
            "llm_call_id": f"c{i}",
        }
        for i in range(n)
    ]


def _calls(n: int = 2) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "step_idx": i,
            "purpose": "act",
            "backend": "openai",
            "model": "m",
            "prompt": f"prompt {i}",
            "completion": "eat meal",
            "prompt_tokens": 15,
            "completion_tokens": 1,
            "latency_s": 0.1,
            "error": None,
            "params": {"temperature": 0},
        }
        for i in range(n)
    ]


def test_play_migrations_are_applied(store):
    applied = store.applied_migrations()
    assert {"m010_games", "m011_episodes", "m012_steps", "m013_llm_calls"} <= set(applied)


def test_episode_round_trip_with_steps_and_calls(store):
    play_store.save_episode(store, RUN, GAME, _episode(), _steps(), _calls())
    run = runs.get_run(store, "r", kind="play")
    assert run["status"] == "running" and run["params"] == {"agent": "random"}
    [row] = play_store.list_episodes(store, "run1")
    assert row["level"] == 2 and row["tips"] == ["Open the fridge."] and row["won"]
    steps = play_store.get_steps(store, "e1")
    assert [s["prompt"] for s in steps] == ["prompt 0", "prompt 1"]
    assert steps[0]["facts"] == ["at(P, kitchen)"] and steps[1]["done"]
    assert play_store.finished_episode_keys(store, "run1") == {("g1", 0, "tips")}
    assert store_reads.list_llm_calls(store, "e1")[0]["params"] == {"temperature": 0}


def test_a_failing_episode_write_leaves_nothing(store):
    broken = _steps()
    broken[1]["idx"] = 0  # duplicate step key: the last statement of the transaction fails
    with pytest.raises(duckdb.Error):
        play_store.save_episode(store, RUN, GAME, _episode(), broken, _calls())
    assert runs.get_run(store, "r") is None
    assert play_store.get_episode(store, "e1") is None
    assert store_reads.count_rows(store, "run1") == {"episodes": 0, "steps": 0, "llm_calls": 0}
    assert play_store.get_steps(store, "e1") == [] and store_reads.list_llm_calls(store, "e1") == []


def test_the_same_episode_cannot_be_written_twice(store):
    play_store.save_episode(store, RUN, GAME, _episode("e1"), _steps(), _calls())
    with pytest.raises(duckdb.ConstraintException):
        play_store.save_episode(store, RUN, GAME, _episode("e2"), [], [])
    play_store.save_episode(store, RUN, GAME, _episode("e3", trial=1), [], [])
    assert store_reads.count_rows(store, "run1") == {"episodes": 2, "steps": 2, "llm_calls": 2}
    runs.finish_run(store, "run1")
    assert runs.latest_run(store, "play")["status"] == "finished"


def test_an_exported_episodes_file_names_its_run_and_level(store, tmp_path):
    from workbench.store.export import export_table

    play_store.save_episode(store, RUN, GAME, _episode(), _steps(), _calls())
    out = tmp_path / "episodes.parquet"
    assert export_table(store, "episodes", out, run="r") == 1
    [row] = duckdb.sql(f"SELECT * FROM read_parquet('{out}')").fetchall()
    columns = duckdb.sql(f"SELECT * FROM read_parquet('{out}')").columns
    exported = dict(zip(columns, row))
    assert exported["run_name"] == "r" and exported["level"] == 2
    assert exported["id"] == "e1" and exported["run_id"] == "run1"
