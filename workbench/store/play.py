"""Store queries for played games: games, episodes, steps and LLM calls (the play runs
themselves are rows of `runs`, see `workbench.store.runs`).

A finished episode is written in one short transaction together with its steps, its LLM
calls, its steps' mistake verdicts, its game row and (for the first episode of a run) the
run row, so that a run killed at any moment leaves only whole episodes behind and the
dashboard can read between them.
The unique key (run, game, trial, condition) makes a duplicate episode impossible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb

from workbench.store import Store, _all, _decode, _insert, _one
from workbench.store.mistakes import insert_step_mistakes

LLM_CALL_COLUMNS = (
    "id",
    "run_id",
    "episode_id",
    "step_idx",
    "purpose",
    "backend",
    "model",
    "prompt",
    "completion",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "error",
    "params",
)
STEP_COLUMNS = (
    "episode_id",
    "idx",
    "observation",
    "admissible",
    "facts",
    "action",
    "raw_output",
    "valid",
    "reward",
    "score",
    "feedback",
    "done",
    "llm_call_id",
)


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
    _insert(
        con,
        "llm_calls",
        LLM_CALL_COLUMNS,
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
    mistakes: list[dict[str, Any]] | None = None,
) -> None:
    """Write one finished episode and everything it owns, all or nothing.

    `run` has id, name and params; `game` the columns of `games`; `episode`, `steps` and
    `llm_calls` the columns of their tables (JSON columns as Python values); `mistakes` the
    steps' verdicts (`agents.mistakes.StepVerdict.to_row()`), where they were judged.
    """
    with store._transaction() as con:
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
            _insert(
                con,
                "steps",
                STEP_COLUMNS,
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
        insert_step_mistakes(con, episode["id"], mistakes or [])


def finished_episode_keys(store: Store, run_id: str) -> set[tuple[str, int, str]]:
    """(game id, trial, condition) of every episode the run has already written."""
    with store._connect() as con:
        rows = con.execute(
            "SELECT game_id, trial, condition FROM episodes WHERE run_id = ?", [run_id]
        ).fetchall()
    return {(g, int(t), c) for g, t, c in rows}


def list_episodes(store: Store, run_ids: str | Sequence[str]) -> list[dict[str, Any]]:
    """The episodes of one run (or several) with their run's name and their game's level
    and split, in a stable order: what reports and the dashboard aggregate."""
    rows = _run_episodes(
        store,
        run_ids,
        "e.id, e.run_id, r.name AS run, e.game_id AS game, g.level, g.split, e.trial,"
        " e.condition, e.agent, e.tips, e.won, e.lost, e.score, e.max_score, e.moves,"
        " e.stop_reason, e.invalid_actions, e.prompt_tokens, e.completion_tokens, e.seconds,"
        " e.created_at",
        order="ORDER BY r.name, g.level, e.game_id, e.condition, e.trial, e.id",
    )
    _decode(rows, "tips", empty=list)
    return rows


def episode_outcomes(store: Store, run_ids: str | Sequence[str]) -> list[dict[str, Any]]:
    """What play statistics need of each episode of the runs (run, game, level, condition,
    trial, outcome, score, moves), without the rest: cheap on runs of many episodes."""
    return _run_episodes(
        store,
        run_ids,
        "e.run_id, r.name AS run, e.game_id AS game, g.level, e.condition, e.trial, e.won,"
        " e.score, e.max_score, e.moves, e.invalid_actions",
    )


def _run_episodes(
    store: Store, run_ids: str | Sequence[str], columns: str, order: str = ""
) -> list[dict[str, Any]]:
    """`columns` of the episodes of one run (or several), each episode `e` joined with its
    run `r` and its game `g`; `order` is an ORDER BY clause, if any."""
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    with store._connect() as con:
        return _all(
            con.execute(
                f"SELECT {columns} FROM episodes e JOIN runs r ON r.id = e.run_id"
                f" LEFT JOIN games g ON g.id = e.game_id WHERE e.run_id IN ({marks}) {order}",
                ids,
            )
        )


def get_episode(store: Store, episode_id: str) -> dict[str, Any] | None:
    """An episode with its run's name and its game's level, split and path."""
    with store._connect() as con:
        row = _one(
            con.execute(
                "SELECT e.*, r.name AS run_name, g.level, g.split, g.path AS game_path"
                " FROM episodes e JOIN runs r ON r.id = e.run_id"
                " LEFT JOIN games g ON g.id = e.game_id WHERE e.id = ?",
                [episode_id],
            )
        )
    if row is not None:
        _decode([row], "tips", empty=list)
    return row


def get_steps(store: Store, episode_id: str) -> list[dict[str, Any]]:
    """An episode's steps in order, each with its LLM call's prompt and completion."""
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT s.*, c.prompt, c.completion, c.error AS llm_error"
                " FROM steps s LEFT JOIN llm_calls c ON c.id = s.llm_call_id"
                " WHERE s.episode_id = ? ORDER BY s.idx",
                [episode_id],
            )
        )
    _decode(rows, "admissible", "facts", empty=list)
    return rows


def get_llm_calls(store: Store, call_ids: Sequence[str]) -> list[dict[str, Any]]:
    """LLM calls by id (fetched by primary key), oldest first."""
    if not call_ids:
        return []
    marks = ", ".join("?" for _ in call_ids)
    with store._connect() as con:
        rows = _all(
            con.execute(
                f"SELECT * FROM llm_calls WHERE id IN ({marks}) ORDER BY created_at, id",
                list(call_ids),
            )
        )
    _decode(rows, "params", empty=dict)
    return rows
