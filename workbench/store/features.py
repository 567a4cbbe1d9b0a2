"""Store queries for decision features (`agents.decision_features`): per recorded LLM
decision, the explanation features the mistake predictor reads."""

from __future__ import annotations

import json
from typing import Any

from workbench.store import Store, _all, _decode, _insert, finite

FEATURE_COLUMNS = ("episode_id", "step_idx", "method", "model", "features")


def save_decision_features(store: Store, method: str, rows: list[dict[str, Any]]) -> None:
    """Write (or replace) several decisions' features in one transaction; each row has
    episode_id, step_idx, model and features."""
    if not rows:
        return
    with store._transaction() as con:
        for row in rows:
            con.execute(
                "DELETE FROM decision_features WHERE episode_id = ? AND step_idx = ?"
                " AND method = ?",
                [row["episode_id"], row["step_idx"], method],
            )
        _insert(
            con,
            "decision_features",
            FEATURE_COLUMNS,
            [
                [
                    row["episode_id"],
                    row["step_idx"],
                    method,
                    json.dumps(row["model"]),
                    json.dumps(finite(row["features"])),
                ]
                for row in rows
            ],
        )


def list_decision_features(store: Store, run_id: str, method: str) -> list[dict[str, Any]]:
    """A run's stored decision features for `method`, with each step's episode and game."""
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT f.episode_id, f.step_idx, f.model, f.features, e.game_id, g.level"
                " FROM decision_features f JOIN episodes e ON e.id = f.episode_id"
                " LEFT JOIN games g ON g.id = e.game_id"
                " WHERE e.run_id = ? AND f.method = ?"
                " ORDER BY g.level, e.game_id, f.episode_id, f.step_idx",
                [run_id, method],
            )
        )
    _decode(rows, "model", "features", empty=dict)
    return rows
