"""Store reads that only tests make: row counts, an episode's LLM calls, metric means,
experiment rows and exported rows, read straight from the tables to check what the product
wrote (the product reads through `workbench.store`'s own functions); and one write, which
turns a run into one recorded before the mistake miner."""

from __future__ import annotations

from typing import Any

from workbench.store import Store, _all, _decode
from workbench.store.export import _check_table, _query


def list_llm_calls(store: Store, episode_id: str) -> list[dict[str, Any]]:
    """An episode's LLM calls in order of its steps."""
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT * FROM llm_calls WHERE episode_id = ? ORDER BY step_idx, created_at",
                [episode_id],
            )
        )
    _decode(rows, "params", empty=dict)
    return rows


def count_rows(store: Store, run_id: str) -> dict[str, int]:
    """How many episodes, steps and LLM calls a run has written (for checks and summaries)."""
    with store._connect() as con:
        episodes, steps = con.execute(
            "SELECT count(DISTINCT e.id), count(s.idx) FROM episodes e"
            " LEFT JOIN steps s ON s.episode_id = e.id WHERE e.run_id = ?",
            [run_id],
        ).fetchone()
        calls = con.execute("SELECT count(*) FROM llm_calls WHERE run_id = ?", [run_id]).fetchone()[
            0
        ]
    return {"episodes": int(episodes), "steps": int(steps), "llm_calls": int(calls)}


def metric_summary(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Mean of each metric's per-explanation value, by explanation method (for comparisons)."""
    where, args = (" AND m.name = ?", [name]) if name else ("", [])
    with store._connect() as con:
        cur = con.execute(
            "SELECT e.method, m.name, avg(m.value) AS mean, count(m.value) AS n"
            " FROM metrics m JOIN explanations e ON e.id = m.explanation_id"
            f" WHERE m.row_index IS NULL{where} GROUP BY e.method, m.name"
            " ORDER BY e.method, m.name",
            args,
        )
        return _all(cur)


def get_experiment_results(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store._connect() as con:
        return _all(
            con.execute(
                "SELECT * EXCLUDE (run_id) FROM experiment_results WHERE run_id = ?"
                " ORDER BY phase DESC, level, condition, trial",
                [run_id],
            )
        )


def table_rows(store: Store, table: str, run: str | None = None) -> list[dict[str, Any]]:
    """The rows `export_table` writes, as dicts (JSON columns as text)."""
    _check_table(table)
    with store._connect() as con:
        query, params = _query(con, store, table, run)
        return _all(con.execute(query, params))


def delete_step_mistakes(store: Store, run_id: str) -> None:
    """Forget a run's step verdicts, as if it had been recorded before the mistake miner."""
    with store._transaction() as con:
        con.execute(
            "DELETE FROM step_mistakes WHERE episode_id IN"
            " (SELECT id FROM episodes WHERE run_id = ?)",
            [run_id],
        )
