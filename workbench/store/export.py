"""Tables out of the store as Parquet or JSON Lines, for pandas, polars or DuckDB elsewhere.

    >>> export_table(Store("workbench.duckdb"), "episodes", "episodes.parquet")  # doctest: +SKIP

Each table is written as DuckDB holds it (JSON columns stay JSON text), in a stable order,
optionally only the rows of one run. The file appears whole or not at all: DuckDB writes a
temporary file in the target folder, which is renamed over the target.
"""

from __future__ import annotations

import os

from workbench.errors import StoreError, WorkbenchError
from workbench.files import atomic_path, check_writable
from workbench.store import Store

FORMATS = ("parquet", "jsonl")

# table -> (query, the same query restricted to one run: the run id is its one parameter)
# Each episode with its run's name and its game's level, so an exported file stands alone.
_EPISODES = (
    "SELECT e.*, r.name AS run_name, g.level FROM episodes e JOIN runs r ON r.id = e.run_id"
    " LEFT JOIN games g ON g.id = e.game_id"
)
_STEPS = "SELECT s.* FROM steps s JOIN episodes e ON e.id = s.episode_id"
_EXPLANATIONS_OF_RUN = (
    "(x.run_id = $run OR x.id IN"
    " (SELECT explanation_id FROM step_explanations WHERE run_id = $run))"
)
_PROBES = (
    "SELECT p.*, l.layer, l.accuracy, l.control_accuracy, l.selectivity, l.majority,"
    " l.n_train, l.n_test FROM probes p LEFT JOIN probe_layers l ON l.probe_id = p.id"
)
_TIPS = (
    "SELECT t.tipset_id, s.run_id, s.kind, s.scope, s.condition, s.game_id, s.trial,"
    " s.version, s.status, t.idx, t.text, t.score"
    " FROM tips t JOIN tipsets s ON s.id = t.tipset_id"
)
QUERIES: dict[str, tuple[str, str, str]] = {
    # name: (select, where for one run, order)
    "runs": ("SELECT * FROM runs", "id = $run", "created_at, id"),
    "episodes": (_EPISODES, "e.run_id = $run", "e.run_id, e.game_id, e.condition, e.trial"),
    "steps": (_STEPS, "e.run_id = $run", "s.episode_id, s.idx"),
    "llm_calls": ("SELECT * FROM llm_calls", "run_id = $run", "created_at, id"),
    "explanations": ("SELECT * FROM explanations x", _EXPLANATIONS_OF_RUN, "created_at, id"),
    "metrics": (
        "SELECT m.* FROM metrics m JOIN explanations x ON x.id = m.explanation_id",
        _EXPLANATIONS_OF_RUN,
        "m.explanation_id, m.name, m.row_index, m.id",
    ),
    "probes": (_PROBES, "p.run_id = $run", "p.created_at, p.id, l.layer"),
    "tips": (_TIPS, "s.run_id = $run", "s.created_at, t.tipset_id, t.idx"),
    # The mistake miner's verdicts and the decisions' explanation features, per step.
    "step_mistakes": (
        "SELECT m.* FROM step_mistakes m JOIN episodes e ON e.id = m.episode_id",
        "e.run_id = $run",
        "m.episode_id, m.step_idx",
    ),
    "decision_features": (
        "SELECT f.* FROM decision_features f JOIN episodes e ON e.id = f.episode_id",
        "e.run_id = $run",
        "f.episode_id, f.step_idx, f.method",
    ),
    # TCAV, steering and RSA results (the whole result as JSON in `result`).
    "concept_results": ("SELECT * FROM concept_results", "run_id = $run", "created_at, id"),
}
TABLES = tuple(QUERIES)


def export_query(table: str, run_id: str | None = None) -> str:
    """The SELECT that `export_table` writes: `table`'s rows (of run `run_id`) in order."""
    _check_table(table)
    select, where_run, order = QUERIES[table]
    where = f" WHERE {where_run}" if run_id is not None else ""
    return f"{select}{where} ORDER BY {order}"


def export_table(
    store: Store,
    table: str,
    out: str | os.PathLike,
    fmt: str = "parquet",
    run: str | None = None,
) -> int:
    """Write `table` (only run `run`'s rows, by name or id, if given) to `out` as `fmt`
    ("parquet" or "jsonl"); returns the number of rows written."""
    _check_table(table)
    if fmt not in FORMATS:
        raise WorkbenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = check_writable(out)
    with store._connect() as con:
        query, params = _query(con, store, table, run)
        count = con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0]
        with atomic_path(out) as tmp:
            copy_format = "PARQUET" if fmt == "parquet" else "JSON"
            escaped = str(tmp).replace("'", "''")
            con.execute(f"COPY ({query}) TO '{escaped}' (FORMAT {copy_format})", params)
    return int(count)


def _check_table(table: str) -> None:
    if table not in QUERIES:
        raise WorkbenchError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")


def _query(con, store: Store, table: str, run: str | None) -> tuple[str, dict[str, str]]:
    """The table's query and its parameters; a run is looked up by name or id."""
    if run is None:
        return export_query(table), {}
    row = con.execute("SELECT id FROM runs WHERE id = ? OR name = ?", [run, run]).fetchone()
    if row is None:
        raise StoreError(f"no run named {run!r} in {store.path}")
    return export_query(table, row[0]), {"run": row[0]}
