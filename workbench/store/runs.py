"""Runs: one row per command that records something (explain, play, experiment, ...).

A run has a unique name (given, or KIND-ID) and a status: running until it finishes,
then finished or failed. Play runs are created by their first episode (see
`workbench.store.play.save_episode`), so a run killed before any episode leaves nothing.

    >>> from workbench.store import Store, runs
    >>> runs.get_run(Store(), "random-l1", kind="play")["status"]     # doctest: +SKIP
    'finished'
"""

from __future__ import annotations

import json
from typing import Any

from workbench.store import Store, _all, _decode, _one, new_id


def create_run(store: Store, name: str | None, kind: str, params: dict[str, Any]) -> str:
    """A new running run of `kind`; returns its id."""
    run_id = new_id()
    with store._transaction() as con:
        con.execute(
            "INSERT INTO runs (id, name, kind, status, params) VALUES (?, ?, ?, 'running', ?)",
            [run_id, name or f"{kind}-{run_id}", kind, json.dumps(params)],
        )
    return run_id


def finish_run(store: Store, run_id: str, status: str = "finished") -> None:
    with store._transaction() as con:
        con.execute(
            "UPDATE runs SET status = ?, finished_at = current_timestamp WHERE id = ?",
            [status, run_id],
        )


def get_run(store: Store, name_or_id: str, kind: str | None = None) -> dict[str, Any] | None:
    """A run by name or id (of `kind`, if given), with its params decoded; None if absent."""
    where, args = ("AND kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        row = _one(
            con.execute(
                f"SELECT * FROM runs WHERE (id = ? OR name = ?) {where}"
                " ORDER BY created_at DESC LIMIT 1",
                [name_or_id, name_or_id, *args],
            )
        )
    if row is not None:
        _decode([row], "params", empty=dict)
    return row


def latest_run(store: Store, kind: str | None = None) -> dict[str, Any] | None:
    """The newest run (of `kind`, if given), or None."""
    where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        row = _one(
            con.execute(
                f"SELECT id FROM runs {where} ORDER BY created_at DESC, name DESC LIMIT 1", args
            )
        )
    return get_run(store, row["id"]) if row else None


def list_runs(
    store: Store, kind: str | None = None, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Runs newest first, each with how many episodes and explanations it recorded."""
    where, args = ("WHERE r.kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        return _all(
            con.execute(
                "SELECT r.id, r.name, r.kind, r.status, r.created_at, r.finished_at,"
                " (SELECT count(*) FROM episodes e WHERE e.run_id = r.id) AS episodes,"
                " (SELECT count(*) FROM explanations x WHERE x.run_id = r.id) AS explanations"
                f" FROM runs r {where} ORDER BY r.created_at DESC, r.name LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )


def count_runs(store: Store, kind: str | None = None) -> int:
    where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        return int(con.execute(f"SELECT count(*) FROM runs {where}", args).fetchone()[0])
