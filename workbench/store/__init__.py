"""The DuckDB store: one file holding runs, explanations and (with their features) games,
episodes, steps, LLM calls, tips and probes.

No SQL lives outside this package: the CLI, the explainers and the dashboard call the
query functions of `Store`.

A connection is opened per operation and closed straight after, because DuckDB lets only
one process hold a file open for writing: short-lived connections (retried while another
process holds the lock) let a batch run and the dashboard share one database.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from workbench.errors import StoreError
from workbench.settings import db_path
from workbench.store.migrations import MIGRATIONS

LOCK_RETRY_SECONDS = 30.0


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Store:
    """A workbench database file. Creating a `Store` validates the file and migrates it.

    >>> store = Store("workbench.duckdb")          # doctest: +SKIP
    >>> store.list_explanations(limit=5)           # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = db_path(path)
        self._check_path()
        with self.connect() as con:
            self._migrate(con)

    # -- connections -------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retried while another process holds the file lock."""
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                message = str(exc)
                # Another process holds the write lock, or (in the dashboard) this process
                # is writing while a read-only connection is asked for: both pass shortly.
                busy = "lock" in message.lower() or "different configuration" in message
                if busy and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise StoreError(_store_message(self.path, message)) from exc
            except duckdb.Error as exc:
                raise StoreError(_store_message(self.path, str(exc))) from exc
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing writes: either every statement lands or none does."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _check_path(self) -> None:
        path = self.path
        if path.is_dir():
            raise StoreError(f"database path {str(path)!r} is a directory, not a DuckDB file")
        if not path.parent.exists():
            raise StoreError(f"cannot create database {str(path)!r}: folder does not exist")
        if path.exists():
            if not os.access(path, os.R_OK):
                raise StoreError(f"database {str(path)!r} is not readable")
            # Checked on the mode bits too: root may write anything, but a file marked
            # read-only is the user saying "don't touch".
            if not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222:
                raise StoreError(f"database {str(path)!r} is read-only")
            with path.open("rb") as fh:
                head = fh.read(16)
            # DuckDB files carry the magic "DUCK" at byte 8; an empty file is a fresh DB.
            if head and head[8:12] != b"DUCK":
                raise StoreError(f"{str(path)!r} is not a DuckDB database")
        elif not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create database {str(path)!r}: folder is read-only")

    @staticmethod
    def _migrate(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "CREATE TABLE IF NOT EXISTS _migrations ("
            " name VARCHAR PRIMARY KEY,"
            " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        applied = {row[0] for row in con.execute("SELECT name FROM _migrations").fetchall()}
        for fn in MIGRATIONS:
            if fn.__name__ in applied:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                fn(con)
                con.execute("INSERT INTO _migrations (name) VALUES (?)", [fn.__name__])
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def applied_migrations(self) -> list[str]:
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
        return [r[0] for r in rows]

    # -- runs --------------------------------------------------------------------------

    def create_run(self, name: str | None, kind: str, params: dict[str, Any]) -> str:
        run_id = new_id()
        with self.transaction() as con:
            con.execute(
                "INSERT INTO runs (id, name, kind, status, params) VALUES (?, ?, ?, 'running', ?)",
                [run_id, name or f"{kind}-{run_id}", kind, json.dumps(params)],
            )
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = current_timestamp WHERE id = ?",
                [status, run_id],
            )

    def get_run(self, name_or_id: str) -> dict[str, Any] | None:
        with self.connect(read_only=True) as con:
            cur = con.execute(
                "SELECT * FROM runs WHERE id = ? OR name = ? ORDER BY created_at DESC LIMIT 1",
                [name_or_id, name_or_id],
            )
            return _one(cur)

    # -- explanations ------------------------------------------------------------------

    def save_explanation(self, record: dict[str, Any], run_id: str | None = None) -> str:
        """Store an explanation given as `Explanation.to_dict()`; returns its id."""
        return self.save_explanations([record], run_id)[0]

    def save_explanations(
        self, records: list[dict[str, Any]], run_id: str | None = None
    ) -> list[str]:
        """Store many explanations in one transaction: all of them or none."""
        with self.transaction() as con:
            return [self.insert_explanation(con, r, run_id) for r in records]

    @staticmethod
    def insert_explanation(
        con: duckdb.DuckDBPyConnection, record: dict[str, Any], run_id: str | None
    ) -> str:
        """Insert inside the caller's transaction (for writes that must land together)."""
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

    def get_explanation(self, exp_id: str) -> dict[str, Any] | None:
        with self.connect(read_only=True) as con:
            row = con.execute("SELECT payload FROM explanations WHERE id = ?", [exp_id]).fetchone()
        return json.loads(row[0]) if row else None

    def list_explanations(
        self, limit: int = 50, offset: int = 0, method: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, without the payload (cheap enough for long listings)."""
        where, args = ("WHERE method = ?", [method]) if method else ("", [])
        with self.connect(read_only=True) as con:
            cur = con.execute(
                "SELECT id, created_at, method, category, model, input_text, target_text,"
                " n_input_tokens, n_target_tokens, max_abs_delta, seconds"
                f" FROM explanations {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
            return _all(cur)


def _all(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _one(cur: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    rows = _all(cur)
    return rows[0] if rows else None


def _store_message(path: Path, message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    if "not a valid DuckDB database" in message or "Invalid Input" in message:
        return f"{str(path)!r} is not a DuckDB database"
    if "lock" in first.lower():
        return f"database {str(path)!r} is busy (locked by another process); try again"
    return f"cannot open database {str(path)!r}: {first}"
