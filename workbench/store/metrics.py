"""Metric values in the store, each linked to the explanation it judges (`metrics` table).

>>> from workbench.store import Store                   # doctest: +SKIP
>>> from workbench.store.metrics import get_metrics
>>> get_metrics(Store(), "3f2a9c1b7d10")
"""

from __future__ import annotations

import json
import math
from typing import Any

from workbench.errors import WorkbenchError
from workbench.store import Store, _all, _decode, _insert, new_id


def save_metrics(store: Store, explanation_id: str, records: list[dict[str, Any]]) -> int:
    """Insert metric records ({name, value, row, details}) in one transaction; returns count.

    Re-evaluating an explanation replaces its earlier values of the same metric names.
    """
    rows = []
    for rec in records:
        value = rec.get("value")
        if value is not None and not math.isfinite(float(value)):
            value = None
        rows.append(
            [
                new_id(),
                explanation_id,
                rec["name"],
                value,
                rec.get("row"),
                json.dumps(rec.get("details") or {}, default=str),
            ]
        )
    names = sorted({r[2] for r in rows})
    with store._connect() as con:  # checked before writing: a failed save creates no file
        exists = con.execute(
            "SELECT count(*) FROM explanations WHERE id = ?", [explanation_id]
        ).fetchone()[0]
    if not exists:
        raise WorkbenchError(f"no explanation with id {explanation_id!r} in {store.path}")
    with store._transaction() as con:
        if names:
            marks = ", ".join("?" for _ in names)
            con.execute(
                f"DELETE FROM metrics WHERE explanation_id = ? AND name IN ({marks})",
                [explanation_id, *names],
            )
        if rows:
            _insert(
                con,
                "metrics",
                ("id", "explanation_id", "name", "value", "row_index", "details"),
                rows,
            )
    return len(rows)


def get_metrics(
    store: Store, explanation_id: str, include_rows: bool = True
) -> list[dict[str, Any]]:
    """An explanation's metric values: name, value, row (None = mean over rows), details."""
    where = "" if include_rows else " AND row_index IS NULL"
    with store._connect() as con:
        cur = con.execute(
            "SELECT name, value, row_index AS row, details FROM metrics"
            f" WHERE explanation_id = ?{where} ORDER BY name, row_index NULLS FIRST",
            [explanation_id],
        )
        out = _all(cur)
    _decode(out, "details", empty=dict)
    return out
