"""Store queries for played games: runs of kind "play", games, episodes, steps, LLM calls.

A finished episode is written in one short transaction together with its steps, its LLM
calls, its game row and (for the first episode of a run) the run row, so that a run killed
at any moment leaves only whole episodes behind and the dashboard can read between them.
The unique key (run, game, trial, condition) makes a duplicate episode impossible.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from workbench.store import Store, _all, _one


def insert_llm_calls(
    con: duckdb.DuckDBPyConnection,
    llm_calls: list[dict[str, Any]],
    run_id: str | None = None,
    episode_id: str | None = None,
) -> None:
    """Write LLM calls (`LLMCall.to_row()`) inside the caller's transaction; a call's own
    run_id / episode_id keys are used where these are not given."""
    if not llm_calls:
        return
    con.executemany(
        "INSERT INTO llm_calls (id, run_id, episode_id, step_idx, purpose, backend, model,"
        " prompt, completion, prompt_tokens, completion_tokens, latency_s, error, params)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            [
                c["id"],
                run_id or c.get("run_id"),
                episode_id or c.get("episode_id"),
                c.get("step_idx"),
                c["purpose"],
                c["backend"],
                c["model"],
                c["prompt"],
                c.get("completion"),
                c.get("prompt_tokens"),
                c.get("completion_tokens"),
                c.get("latency_s"),
                c.get("error"),
                json.dumps(c.get("params") or {}),
            ]
            for c in llm_calls
        ],
    )


def save_episode(
    store: Store,
    run: dict[str, Any],
    game: dict[str, Any],
    episode: dict[str, Any],
    steps: list[dict[str, Any]],
    llm_calls: list[dict[str, Any]],
) -> None:
    """Write one finished episode and everything it owns, all or nothing.

    `run` has id, name and params; `game` the columns of `games`; `episode`, `steps` and
    `llm_calls` the columns of their tables (JSON columns as Python values).
    """
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs (id, name, kind, status, params) VALUES (?, ?, 'play', 'running', ?)"
            " ON CONFLICT DO NOTHING",
            [run["id"], run["name"], json.dumps(run["params"])],
        )
        con.execute(
            "INSERT INTO games (id, path, level, split, seed, max_score, walkthrough_steps,"
            " ingredients) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET path = excluded.path",
            [
                game["id"],
                game["path"],
                game.get("level"),
                game.get("split"),
                game.get("seed"),
                game["max_score"],
                game.get("walkthrough_steps"),
                json.dumps(game.get("ingredients", [])),
            ],
        )
        con.execute(
            "INSERT INTO episodes (id, run_id, game_id, trial, condition, agent, tips, won, lost,"
            " score, max_score, moves, stop_reason, invalid_actions, prompt_tokens,"
            " completion_tokens, seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                episode["id"],
                run["id"],
                game["id"],
                episode["trial"],
                episode["condition"],
                episode["agent"],
                json.dumps(episode["tips"]),
                episode["won"],
                episode["lost"],
                episode["score"],
                episode["max_score"],
                episode["moves"],
                episode["stop_reason"],
                episode["invalid_actions"],
                episode["prompt_tokens"],
                episode["completion_tokens"],
                episode["seconds"],
            ],
        )
        insert_llm_calls(con, llm_calls, run["id"], episode["id"])
        if steps:
            con.executemany(
                "INSERT INTO steps (episode_id, idx, observation, admissible, facts, action,"
                " raw_output, valid, reward, score, feedback, done, llm_call_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        episode["id"],
                        s["idx"],
                        s["observation"],
                        json.dumps(s["admissible"]),
                        json.dumps(s["facts"]),
                        s["action"],
                        s.get("raw_output"),
                        s["valid"],
                        s["reward"],
                        s["score"],
                        s["feedback"],
                        s["done"],
                        s.get("llm_call_id"),
                    ]
                    for s in steps
                ],
            )


def get_play_run(store: Store, name_or_id: str) -> dict[str, Any] | None:
    """A play run by name or id, with its params decoded."""
    with store.connect(read_only=True) as con:
        row = _one(
            con.execute(
                "SELECT * FROM runs WHERE kind = 'play' AND (id = ? OR name = ?)"
                " ORDER BY created_at DESC LIMIT 1",
                [name_or_id, name_or_id],
            )
        )
    if row and isinstance(row.get("params"), str):
        row["params"] = json.loads(row["params"])
    return row


def latest_play_run(store: Store) -> dict[str, Any] | None:
    with store.connect(read_only=True) as con:
        row = _one(
            con.execute("SELECT id FROM runs WHERE kind = 'play' ORDER BY created_at DESC LIMIT 1")
        )
    return get_play_run(store, row["id"]) if row else None


def finished_episode_keys(store: Store, run_id: str) -> set[tuple[str, int, str]]:
    """(game id, trial, condition) of every episode the run has already written."""
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT game_id, trial, condition FROM episodes WHERE run_id = ?", [run_id]
        ).fetchall()
    return {(g, int(t), c) for g, t, c in rows}


def finish_play_run(store: Store, run_id: str) -> None:
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET status = 'finished', finished_at = current_timestamp WHERE id = ?",
            [run_id],
        )


def list_episodes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's episodes with their game's level and split, in a stable order."""
    with store.connect(read_only=True) as con:
        rows = _all(
            con.execute(
                "SELECT e.id, e.game_id AS game, g.level, g.split, e.trial, e.condition,"
                " e.agent, e.tips, e.won, e.lost, e.score, e.max_score, e.moves,"
                " e.stop_reason, e.invalid_actions, e.prompt_tokens, e.completion_tokens,"
                " e.seconds, e.created_at"
                " FROM episodes e LEFT JOIN games g ON g.id = e.game_id"
                " WHERE e.run_id = ? ORDER BY g.level, e.game_id, e.condition, e.trial",
                [run_id],
            )
        )
    for row in rows:
        row["tips"] = json.loads(row["tips"]) if row["tips"] else []
    return rows


def get_steps(store: Store, episode_id: str) -> list[dict[str, Any]]:
    """An episode's steps in order, each with its LLM call's prompt and completion."""
    with store.connect(read_only=True) as con:
        rows = _all(
            con.execute(
                "SELECT s.*, c.prompt, c.completion, c.error AS llm_error"
                " FROM steps s LEFT JOIN llm_calls c ON c.id = s.llm_call_id"
                " WHERE s.episode_id = ? ORDER BY s.idx",
                [episode_id],
            )
        )
    for row in rows:
        row["admissible"] = json.loads(row["admissible"])
        row["facts"] = json.loads(row["facts"])
    return rows


def list_llm_calls(store: Store, episode_id: str) -> list[dict[str, Any]]:
    with store.connect(read_only=True) as con:
        rows = _all(
            con.execute(
                "SELECT * FROM llm_calls WHERE episode_id = ? ORDER BY step_idx, created_at",
                [episode_id],
            )
        )
    for row in rows:
        row["params"] = json.loads(row["params"]) if row["params"] else {}
    return rows


def count_rows(store: Store, run_id: str) -> dict[str, int]:
    """How many episodes, steps and LLM calls a run has written (for checks and summaries)."""
    with store.connect(read_only=True) as con:
        episodes, steps = con.execute(
            "SELECT count(DISTINCT e.id), count(s.idx) FROM episodes e"
            " LEFT JOIN steps s ON s.episode_id = e.id WHERE e.run_id = ?",
            [run_id],
        ).fetchone()
        calls = con.execute("SELECT count(*) FROM llm_calls WHERE run_id = ?", [run_id]).fetchone()[
            0
        ]
    return {"episodes": int(episodes), "steps": int(steps), "llm_calls": int(calls)}
