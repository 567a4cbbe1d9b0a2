"""Runs: one row per command that records something (explain, play, experiment, ...).

A run has a unique name (given, or KIND-ID) and a status: running until it finishes,
then finished, failed or interrupted. A play run is recorded when it starts, with the
number of episodes it plans (`start_play_run`), so that a dashboard shows it running from
its first second; one that fails or is interrupted before any episode is removed again
(`discard_empty_run`), so bad input leaves nothing behind.

    >>> from workbench.store import Store, runs
    >>> runs.get_run(Store(), "random-l1", kind="play")["status"]     # doctest: +SKIP
    'finished'
"""

from __future__ import annotations

import json
from typing import Any

from workbench.errors import StoreError
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


def start_play_run(store: Store, run: dict[str, Any], planned: int) -> None:
    """Record that play run `run` (id, name, params) is running and means to have `planned`
    episodes; a resumed run (same id) is marked running again with its new plan."""
    with store._transaction() as con:
        con.execute(
            "INSERT INTO runs (id, name, kind, status, params, planned)"
            " VALUES (?, ?, 'play', 'running', ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET status = 'running', finished_at = NULL,"
            " planned = excluded.planned",
            [run["id"], run["name"], json.dumps(run["params"]), planned],
        )


def discard_empty_run(store: Store, run_id: str) -> bool:
    """Remove a run that recorded nothing (no episodes, no explanations); True if removed."""
    with store._transaction() as con:
        used = con.execute(
            "SELECT (SELECT count(*) FROM episodes WHERE run_id = ?)"
            " + (SELECT count(*) FROM explanations WHERE run_id = ?)",
            [run_id, run_id],
        ).fetchone()[0]
        if used:
            return False
        con.execute("DELETE FROM runs WHERE id = ?", [run_id])
    return True


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


def require_run(store: Store, name_or_id: str, kind: str = "play") -> dict[str, Any]:
    """`get_run`, for a run the caller was told exists: a missing one is a user error."""
    record = get_run(store, name_or_id, kind=kind)
    if record is None:
        raise StoreError(f"no {kind} run named {name_or_id!r} in {store.path}")
    return record


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
    """Runs newest first, each with how many episodes (of how many planned, for play runs),
    steps and explanations it recorded, and `seconds`: its duration once it has ended, the
    time since it started while it runs."""
    where, args = ("WHERE r.kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        return _all(
            con.execute(
                "SELECT r.id, r.name, r.kind, r.status, r.created_at, r.finished_at,"
                " coalesce(p.episodes, 0) AS episodes, r.planned,"
                " coalesce(p.steps, 0) AS steps,"
                " (SELECT count(*) FROM explanations x WHERE x.run_id = r.id) AS explanations,"
                " date_diff('millisecond', r.created_at,"
                " coalesce(r.finished_at, CAST(current_timestamp AS TIMESTAMP))) / 1000.0"
                " AS seconds"
                " FROM runs r LEFT JOIN (SELECT run_id, count(*) AS episodes,"
                " sum(moves) AS steps FROM episodes GROUP BY run_id) p ON p.run_id = r.id"
                f" {where} ORDER BY r.created_at DESC, r.name LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
        )


def count_runs(store: Store, kind: str | None = None) -> int:
    where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
    with store._connect() as con:
        return int(con.execute(f"SELECT count(*) FROM runs {where}", args).fetchone()[0])
