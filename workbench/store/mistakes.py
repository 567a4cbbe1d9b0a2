"""Store queries for the mistake miner (`agents.mistakes`): per recorded step, TextWorld's
winning plan before it and the verdict on the command the agent took.

A run records its verdicts with each episode (`play.save_episode`, same transaction); an
older run's are back-filled for all its episodes at once (`save_step_mistakes`).
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from workbench.store import Store, _all, _decode, _insert

MISTAKE_COLUMNS = ("episode_id", "step_idx", "optimal", "mistake", "regret", "lost")


def insert_step_mistakes(
    con: duckdb.DuckDBPyConnection, episode_id: str, verdicts: list[dict[str, Any]]
) -> None:
    """Write an episode's verdicts (`StepVerdict.to_row()`, one per step) inside the caller's
    transaction."""
    if not verdicts:
        return
    _insert(
        con,
        "step_mistakes",
        MISTAKE_COLUMNS,
        [
            [
                episode_id,
                v["step_idx"],
                json.dumps(v["optimal"]),
                v["mistake"],
                v["regret"],
                v["lost"],
            ]
            for v in verdicts
        ],
    )


def save_step_mistakes(store: Store, by_episode: dict[str, list[dict[str, Any]]]) -> None:
    """Write the verdicts of several episodes in one transaction: all of them or none."""
    if not by_episode:
        return
    with store._transaction() as con:
        for episode_id, verdicts in by_episode.items():
            insert_step_mistakes(con, episode_id, verdicts)


def unmined_episodes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run's episodes that have steps but no verdicts yet (recorded before the miner
    existed), with their game's id and file, in a stable order."""
    with store._connect() as con:
        return _all(
            con.execute(
                "SELECT e.id, e.game_id, g.path AS game_path, e.moves FROM episodes e"
                " LEFT JOIN games g ON g.id = e.game_id"
                " WHERE e.run_id = ? AND e.moves > 0 AND NOT EXISTS"
                " (SELECT 1 FROM step_mistakes m WHERE m.episode_id = e.id)"
                " ORDER BY e.game_id, e.condition, e.trial, e.id",
                [run_id],
            )
        )


def list_step_mistakes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every judged step of a run with its episode (game, level, outcome), the command taken
    and how many attributions (`step_explanations`, activation patching left out) explain
    it; in order of level, game, episode and step."""
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT e.id AS episode_id, e.game_id AS game, g.level, e.trial, e.condition,"
                " e.won AS episode_won, e.lost AS episode_lost, e.stop_reason, e.moves,"
                " s.idx AS step, s.action, s.valid, s.llm_call_id IS NOT NULL AS llm,"
                " m.optimal, m.mistake, m.regret, m.lost,"
                " coalesce(x.n, 0) AS explanations"
                " FROM step_mistakes m JOIN episodes e ON e.id = m.episode_id"
                " JOIN steps s ON s.episode_id = m.episode_id AND s.idx = m.step_idx"
                " LEFT JOIN games g ON g.id = e.game_id"
                " LEFT JOIN (SELECT episode_id, step_idx, count(*) AS n FROM step_explanations"
                " WHERE run_id = ? AND method <> 'activation_patching'"
                " GROUP BY episode_id, step_idx) x"
                " ON x.episode_id = m.episode_id AND x.step_idx = m.step_idx"
                " WHERE e.run_id = ?"
                " ORDER BY g.level, e.game_id, e.condition, e.trial, e.id, s.idx",
                [run_id, run_id],
            )
        )
    _decode(rows, "optimal", empty=list)
    return rows
