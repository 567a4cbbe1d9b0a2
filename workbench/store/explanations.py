"""Explanations: one row per stored `Explanation`, its whole record in `payload` and the
columns a listing needs beside it (method, model and its full identity, sizes, completeness
error).

    >>> from workbench.store import Store, explanations
    >>> explanations.list_explanations(Store(), limit=5)          # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from workbench.store import Store, _all, _decode, new_id


def save_explanation(store: Store, record: dict[str, Any], run_id: str | None = None) -> str:
    """Store an explanation given as `Explanation.to_dict()`; returns its id."""
    return save_explanations(store, [record], run_id)[0]


def save_explanations(
    store: Store, records: list[dict[str, Any]], run_id: str | None = None
) -> list[str]:
    """Store many explanations in one transaction: all of them or none."""
    with store._transaction() as con:
        return [insert_explanation(con, r, run_id) for r in records]


def insert_explanation(
    con: duckdb.DuckDBPyConnection, record: dict[str, Any], run_id: str | None
) -> str:
    """Insert inside a transaction of this package (for writes that must land together)."""
    exp_id = record.get("id") or new_id()
    record = {**record, "id": exp_id}
    deltas = [abs(d) for d in (record.get("delta") or []) if d is not None]
    con.execute(
        "INSERT INTO explanations (id, run_id, method, category, model, input_text,"
        " target_text, n_input_tokens, n_target_tokens, max_abs_delta, seconds, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            exp_id,
            run_id,
            record["method"],
            record["category"],
            record["model"],
            record.get("input_text", ""),
            "".join(record.get("target_tokens") or []),
            len(record.get("input_tokens") or []),
            len(record.get("target_tokens") or []),
            max(deltas) if deltas else None,
            record.get("seconds"),
            json.dumps(record),
        ],
    )
    return exp_id


def get_explanation(store: Store, exp_id: str) -> dict[str, Any] | None:
    """The stored record (as `Explanation.to_dict()`), or None."""
    with store._connect() as con:
        row = con.execute("SELECT payload FROM explanations WHERE id = ?", [exp_id]).fetchone()
    return json.loads(row[0]) if row else None


def list_explanations(
    store: Store, limit: int | None = 50, offset: int = 0, method: str | None = None
) -> list[dict[str, Any]]:
    """Newest first, without the payload (cheap enough for long listings), each with its
    number of stored metric values and its model's identity (`model_info`: None for
    explanations stored before identities were kept)."""
    where, args = ("WHERE x.method = ?", [method]) if method else ("", [])
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT x.id, x.created_at, x.method, x.category, x.model, x.input_text,"
                " x.target_text, x.n_input_tokens, x.n_target_tokens, x.max_abs_delta,"
                " x.seconds, json_extract(x.payload, '$.model_info') AS model_info,"
                " (SELECT count(*) FROM metrics m WHERE m.explanation_id = x.id) AS metrics"
                f" FROM explanations x {where}"
                " ORDER BY x.created_at DESC, x.id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )
    _decode(rows, "model_info")
    return rows


def count_explanations(store: Store, method: str | None = None) -> int:
    where, args = ("WHERE method = ?", [method]) if method else ("", [])
    with store._connect() as con:
        return int(con.execute(f"SELECT count(*) FROM explanations {where}", args).fetchone()[0])


def explanation_methods(store: Store) -> list[str]:
    """The methods that have stored explanations, sorted."""
    with store._connect() as con:
        rows = con.execute("SELECT DISTINCT method FROM explanations ORDER BY method").fetchall()
    return [r[0] for r in rows]


def run_explanations(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The records of one run's explanations (each with its id), oldest first: what a
    resumed data-set run has already done (data-set mode keeps each line's index in
    `extras["item"]`)."""
    with store._connect() as con:
        rows = con.execute(
            "SELECT id, payload FROM explanations WHERE run_id = ? ORDER BY created_at, id",
            [run_id],
        ).fetchall()
    return [{**json.loads(payload), "id": exp_id} for exp_id, payload in rows]
