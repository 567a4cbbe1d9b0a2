"""Store queries for introspective tips: tip sets (versioned, with provenance), their tips
and merge operations, the explanations of single agent steps, and experiment results.

A tip set is written in one transaction together with its tips, its operations and the LLM
calls that produced it (failed attempts included), so its provenance is never partial.
"""

from __future__ import annotations

import json
from typing import Any

from workbench.store import Store, _all, _decode, _insert, _one
from workbench.store.explanations import insert_explanation
from workbench.store.play import insert_llm_calls

TIP_OP_COLUMNS = (
    "tipset_id",
    "idx",
    "op",
    "target",
    "text",
    "old_text",
    "applied",
    "note",
    "llm_call_id",
)
EXPERIMENT_COLUMNS = (
    "phase",
    "level",
    "condition",
    "trial",
    "games",
    "episodes",
    "success",
    "success_low",
    "success_high",
    "score",
    "score_low",
    "score_high",
    "steps_to_win",
    "success_diff",  # against the baseline condition: McNemar for success,
    "success_p",
    "score_diff",  # a paired t-test for the score
    "score_p",
)


def save_tipset(
    store: Store,
    tipset: dict[str, Any],
    tips: list[dict[str, Any]],
    ops: list[dict[str, Any]],
    llm_calls: list[dict[str, Any]],
) -> None:
    """Write a tip set version, its tips (text, score), its operations and LLM calls."""
    with store._transaction() as con:
        insert_llm_calls(con, llm_calls)
        con.execute(
            "INSERT INTO tipsets (id, run_id, kind, scope, condition, game_id, trial, parent_id,"
            " version, status, error, episodes, llm_call_ids, params)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                tipset["id"],
                tipset.get("run_id"),
                tipset["kind"],
                tipset["scope"],
                tipset.get("condition"),
                tipset.get("game_id"),
                tipset.get("trial"),
                tipset.get("parent_id"),
                tipset["version"],
                tipset["status"],
                tipset.get("error"),
                json.dumps(tipset.get("episodes") or []),
                json.dumps(tipset.get("llm_call_ids") or []),
                json.dumps(tipset.get("params") or {}),
            ],
        )
        if tips:
            _insert(
                con,
                "tips",
                ("tipset_id", "idx", "text", "score"),
                [[tipset["id"], i, t["text"], t["score"]] for i, t in enumerate(tips)],
            )
        if ops:
            _insert(
                con,
                "tip_ops",
                TIP_OP_COLUMNS,
                [
                    [
                        tipset["id"],
                        i,
                        o["op"],
                        o.get("target"),
                        o.get("text"),
                        o.get("old_text"),
                        o["applied"],
                        o.get("note"),
                        o.get("llm_call_id"),
                    ]
                    for i, o in enumerate(ops)
                ],
            )


def _decode_tipsets(rows: list[dict[str, Any]]) -> None:
    _decode(rows, "episodes", "llm_call_ids", empty=list)
    _decode(rows, "params", empty=dict)


def get_tipset(store: Store, tipset_id: str) -> dict[str, Any] | None:
    """One tip set with its run's name, its tips (in order) and the operations that made
    it; None if there is no such id."""
    with store._connect() as con:
        row = _one(
            con.execute(
                "SELECT t.*, r.name AS run_name FROM tipsets t"
                " LEFT JOIN runs r ON r.id = t.run_id WHERE t.id = ?",
                [tipset_id],
            )
        )
        if row is None:
            return None
        row["tips"] = _all(
            con.execute(
                "SELECT idx, text, score FROM tips WHERE tipset_id = ? ORDER BY idx", [tipset_id]
            )
        )
        row["ops"] = _all(
            con.execute(
                "SELECT op, target, text, old_text, applied, note, llm_call_id FROM tip_ops"
                " WHERE tipset_id = ? ORDER BY idx",
                [tipset_id],
            )
        )
    _decode_tipsets([row])
    return row


def tipset_lineage(store: Store, tipset_id: str) -> list[dict[str, Any]]:
    """The chain of versions a tip set grew from, oldest first, itself last."""
    with store._connect() as con:
        return _all(
            con.execute(
                "WITH RECURSIVE chain(id, parent_id, version, kind, status, created_at) AS ("
                "  SELECT id, parent_id, version, kind, status, created_at FROM tipsets"
                "  WHERE id = ?"
                "  UNION ALL SELECT t.id, t.parent_id, t.version, t.kind, t.status, t.created_at"
                "  FROM tipsets t JOIN chain c ON t.id = c.parent_id)"
                " SELECT * FROM chain ORDER BY version",
                [tipset_id],
            )
        )


def list_tipsets(
    store: Store,
    run_id: str | None = None,
    kind: str | None = None,
    limit: int | None = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Tip sets newest first, each with its number of tips and run name."""
    clause, args = _tipset_filter(run_id, kind)
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT t.*, r.name AS run_name,"
                " (SELECT count(*) FROM tips WHERE tipset_id = t.id) AS n_tips"
                f" FROM tipsets t LEFT JOIN runs r ON r.id = t.run_id {clause}"
                " ORDER BY t.created_at DESC, t.version DESC, t.id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )
    _decode_tipsets(rows)
    return rows


def count_tipsets(store: Store, run_id: str | None = None, kind: str | None = None) -> int:
    clause, args = _tipset_filter(run_id, kind)
    with store._connect() as con:
        return int(con.execute(f"SELECT count(*) FROM tipsets t {clause}", args).fetchone()[0])


def _tipset_filter(run_id: str | None, kind: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    if run_id is not None:
        where.append("t.run_id = ?")
        args.append(run_id)
    if kind is not None:
        where.append("t.kind = ?")
        args.append(kind)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def find_tipset(
    store: Store, run_id: str, condition: str, game_id: str | None, trial: int
) -> dict[str, Any] | None:
    """The tip set a run wrote for (condition, game) after the given trial, if any (a
    resumed run reuses it instead of asking the LLM again)."""
    with store._connect() as con:
        row = _one(
            con.execute(
                "SELECT id FROM tipsets WHERE run_id = ? AND condition = ?"
                " AND game_id IS NOT DISTINCT FROM ? AND trial = ?"
                " ORDER BY version DESC LIMIT 1",
                [run_id, condition, game_id, trial],
            )
        )
    return get_tipset(store, row["id"]) if row else None


def final_tipsets(store: Store, run_id: str, conditions: list[str]) -> list[dict[str, Any]]:
    """The latest usable tip set (status ok or partial) per (condition, game) of a run: what
    each game learned."""
    marks = ", ".join("?" for _ in conditions)
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY condition, game_id"
                " ORDER BY trial DESC, version DESC) AS rank FROM tipsets"
                f" WHERE run_id = ? AND status <> 'failed' AND condition IN ({marks}))"
                " WHERE rank = 1 ORDER BY id",
                [run_id, *conditions],
            )
        )
    return [t for t in (get_tipset(store, r["id"]) for r in rows) if t is not None]


def save_step_explanation(store: Store, row: dict[str, Any], explanation: dict[str, Any]) -> str:
    """Write a step's explanation and its link to the step in one transaction; returns the
    explanation's id."""
    with store._transaction() as con:
        exp_id = insert_explanation(con, explanation, row["run_id"])
        con.execute(
            "INSERT INTO step_explanations (explanation_id, run_id, episode_id, step_idx, method,"
            " action, total, segments, tips, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                exp_id,
                row["run_id"],
                row["episode_id"],
                row["step_idx"],
                row["method"],
                row["action"],
                row["total"],
                json.dumps(row["segments"]),
                json.dumps(row["tips"]),
                json.dumps(row.get("params") or {}),
            ],
        )
    return exp_id


def list_step_explanations(
    store: Store, episode_id: str, step_idx: int | None = None
) -> list[dict[str, Any]]:
    """The explanations of an episode's steps (one step's, with `step_idx`), newest first."""
    where, args = "episode_id = ?", [episode_id]
    if step_idx is not None:
        where += " AND step_idx = ?"
        args.append(step_idx)
    with store._connect() as con:
        rows = _all(
            con.execute(
                f"SELECT * FROM step_explanations WHERE {where} ORDER BY created_at DESC", args
            )
        )
    _decode(rows, "segments", "tips", "params", empty=dict)
    return rows


def save_experiment_results(store: Store, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Replace an experiment's result rows (a resumed experiment recomputes them all)."""
    with store._transaction() as con:
        con.execute("DELETE FROM experiment_results WHERE run_id = ?", [run_id])
        if rows:
            _insert(
                con,
                "experiment_results",
                ("run_id", *EXPERIMENT_COLUMNS),
                [[run_id, *[r.get(n) for n in EXPERIMENT_COLUMNS]] for r in rows],
            )
