"""Probe results in the store: one `probes` row per run of a probe, one `probe_layers` row
per probed layer (what the dashboard plots as accuracy by layer)."""

from __future__ import annotations

import json
from typing import Any

from workbench.store import Store, _all, _decode, _insert, _where, new_id

LAYER_COLUMNS = (
    "layer",
    "accuracy",
    "control_accuracy",
    "selectivity",
    "majority",
    "n_train",
    "n_test",
)


def save_probe(store: Store, record: dict[str, Any], run_id: str | None = None) -> str:
    """Store a probe given as `ProbeResult.to_dict()` (all layers in one transaction)."""
    probe_id = record.get("id") or new_id()
    with store._transaction() as con:
        con.execute(
            "INSERT INTO probes (id, run_id, task, model, n_examples, labels, split, params,"
            " seconds, model_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                probe_id,
                run_id,
                record["task"],
                record["model"],
                record["n_examples"],
                json.dumps(record["labels"]),
                record["split"],
                json.dumps(record.get("params") or {}),
                record.get("seconds"),
                json.dumps(record["model_info"]) if record.get("model_info") else None,
            ],
        )
        _insert(
            con,
            "probe_layers",
            ("probe_id", *LAYER_COLUMNS),
            [[probe_id, *(layer[c] for c in LAYER_COLUMNS)] for layer in record["layers"]],
        )
    return probe_id


def get_probe(store: Store, probe_id: str) -> dict[str, Any] | None:
    """A stored probe with its per-layer figures (layers in order), or None."""
    with store._connect() as con:
        rows = _all(con.execute("SELECT * FROM probes WHERE id = ?", [probe_id]))
        if not rows:
            return None
        layers = _all(
            con.execute(
                f"SELECT {', '.join(LAYER_COLUMNS)} FROM probe_layers WHERE probe_id = ?"
                " ORDER BY layer",
                [probe_id],
            )
        )
    probe = rows[0]
    _decode([probe], "labels", "params", empty=dict)
    _decode([probe], "model_info")
    probe["layers"] = layers
    return probe


def list_probes(
    store: Store,
    limit: int | None = 50,
    task: str | None = None,
    model: str | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first, with the best layer by selectivity (without the per-layer rows)."""
    clause, args = _where(("p.task = ?", task), ("p.model = ?", model))
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT p.id, p.created_at, p.task, p.model, p.model_info, p.n_examples,"
                " p.split,"
                " arg_max(l.layer, l.selectivity) AS best_layer,"
                " max(l.selectivity) AS best_selectivity,"
                " max(l.accuracy) AS best_accuracy"
                f" FROM probes p LEFT JOIN probe_layers l ON l.probe_id = p.id {clause}"
                " GROUP BY ALL ORDER BY p.created_at DESC, p.id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )
    _decode(rows, "model_info")
    return rows


def count_probes(store: Store) -> int:
    with store._connect() as con:
        return int(con.execute("SELECT count(*) FROM probes").fetchone()[0])
