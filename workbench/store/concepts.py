"""Concept results in the store (TCAV, steering, RSA: `explainers.concepts`), one
`concept_results` row each with the whole result as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from workbench.store import Store, _all, _decode, _where, finite, new_id

KINDS = ("tcav", "steer", "rsa")


def summary(kind: str, record: dict[str, Any]) -> str:
    """The one line a listing shows."""
    if kind == "rsa":
        best = max(record["layers"], key=lambda r: r["rho"])
        return f"rho {best['rho']:+.3f} at layer {best['layer']} (p {best['p_value']:.3g})"
    if kind == "tcav":
        hits = [r["layer"] for r in record["layers"] if r["significant"]]
        return f"{len(hits)} of {len(record['layers'])} layers differ from random" + (
            f" ({', '.join(map(str, hits[:8]))}{'...' if len(hits) > 8 else ''})" if hits else ""
        )
    effect = record["effects"][-1] if record.get("effects") else None
    if effect is None:
        return f"{record['n_decisions']} decisions"
    interval = (
        f" [{effect['low']:+.3f}, {effect['high']:+.3f}]"
        if all(isinstance(effect[k], float) and math.isfinite(effect[k]) for k in ("low", "high"))
        else ""  # one decision: no interval
    )
    return f"alpha {effect['alpha']:+g}: {effect['difference']:+.3f}{interval} vs random"


def save_concept_result(
    store: Store, kind: str, record: dict[str, Any], run_id: str | None = None
) -> str:
    """Store a result given as its `to_dict()`; returns its id."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    result_id = record.get("id") or new_id()
    record = {**record, "id": result_id}
    with store._transaction() as con:
        con.execute(
            "INSERT INTO concept_results (id, kind, run_id, concept, model, model_info,"
            " summary, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                result_id,
                kind,
                run_id,
                record.get("concept"),
                record["model"],
                json.dumps(record["model_info"]) if record.get("model_info") else None,
                summary(kind, record),
                json.dumps(finite(record)),
            ],
        )
    return result_id


def get_concept_result(store: Store, result_id: str) -> dict[str, Any] | None:
    """A stored result: its row, with `result` decoded."""
    with store._connect() as con:
        rows = _all(con.execute("SELECT * FROM concept_results WHERE id = ?", [result_id]))
    _decode(rows, "result", "model_info")
    return rows[0] if rows else None


def list_concept_results(
    store: Store, kind: str | None = None, limit: int | None = 50
) -> list[dict[str, Any]]:
    """Newest first, without the results' bodies."""
    clause, args = _where(("kind = ?", kind))
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT id, created_at, kind, run_id, concept, model, model_info, summary"
                f" FROM concept_results {clause} ORDER BY created_at DESC, id LIMIT ?",
                [*args, limit],
            )
        )
    _decode(rows, "model_info")
    return rows
