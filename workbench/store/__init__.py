"""The DuckDB store: one file holding runs, explanations and (with their features) games,
episodes, steps, LLM calls, tips and probes.

One module per table family holds its queries as functions taking the `Store` first:
`runs`, `explanations`, `metrics`, `probes`, `play` (games, episodes, steps, LLM calls),
`tips` (tip sets, explained steps, experiment results), `mistakes` (the mistake miner's
verdicts on steps), `dashboard` (the dashboard's pages), `export` (tables to Parquet /
JSONL) and `synthetic` (bulk records for benchmarks). No SQL lives outside this package.

    >>> from workbench.store import Store, explanations
    >>> store = Store("workbench.duckdb")                      # doctest: +SKIP
    >>> explanations.list_explanations(store, limit=5)         # doctest: +SKIP

`Store` is only the file: its path, its migrations and short-lived connections, private to
this package. A connection is opened per operation and closed straight after, because
DuckDB lets only one process hold a file open for writing: short-lived connections
(retried while another process holds the lock) let a batch run and the dashboard share
one database.

Nothing is created before the first write: reading a database that does not exist yet
reads empty tables, so a command that fails or only reads leaves no file behind. A store
opened with `read_only=True` must exist and is never written (a chmod-444 file works).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from workbench.errors import StoreError
from workbench.settings import db_path
from workbench.store.migrations import MIGRATIONS

LOCK_RETRY_SECONDS = 30.0
INSERT_CHUNK = 500  # rows per INSERT statement


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Store:
    """A workbench database file, created and migrated at the first write.

    Args:
        path: the DuckDB file (default: $WORKBENCH_DB, else ./workbench.duckdb).
        read_only: open an existing file for reading only; a missing file is an error.
    """

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False):
        self.path = db_path(path)
        self.read_only = read_only
        self._migrated = False
        self._check_path()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    def migrate(self) -> None:
        """Create the file if it is missing and apply pending migrations: what the first
        write does, on demand (e.g. an empty database for the dashboard to open)."""
        self._check_writable()
        self._migrate_once()

    def applied_migrations(self) -> list[str]:
        """Names of the migrations this file has applied (all of them before the first write:
        the file will be created up to date)."""
        with self._connect() as con:
            rows = con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
        return [r[0] for r in rows]

    # -- connections (for the modules of this package only) -----------------------------

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection: read-only unless `write`."""
        if write:
            self._check_writable()
            self._migrate_once()
            with self._open(read_only=False) as con:
                yield con
            return
        if not self.path.exists() or self.path.stat().st_size == 0:
            if self.read_only:
                raise StoreError(f"no database at {str(self.path)!r}")
            # Nothing written yet: the tables exist, empty. Reading must not create the file.
            con = duckdb.connect(":memory:")
            try:
                self._migrate(con)
                yield con
            finally:
                con.close()
            return
        if not self.read_only:
            self._migrate_once()
        with self._open(read_only=True) as con:
            yield con

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing writes: either every statement lands or none does."""
        with self._connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextlib.contextmanager
    def _open(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """Connect to the file, retried while another process holds the lock."""
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
                    _wait(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise StoreError(_store_message(self.path, message)) from exc
            except duckdb.Error as exc:
                raise StoreError(_store_message(self.path, str(exc))) from exc
        try:
            yield con
        finally:
            con.close()

    # -- checks and migrations ----------------------------------------------------------

    def _check_path(self) -> None:
        path = self.path
        if path.is_dir():
            raise StoreError(f"database path {str(path)!r} is a directory, not a DuckDB file")
        if path.exists():
            if not os.access(path, os.R_OK):
                raise StoreError(f"database {str(path)!r} is not readable")
            with path.open("rb") as fh:
                head = fh.read(16)
            # DuckDB files carry the magic "DUCK" at byte 8; an empty file is a fresh DB.
            if head and head[8:12] != b"DUCK":
                raise StoreError(f"{str(path)!r} is not a DuckDB database")
        elif self.read_only:
            raise StoreError(f"no database at {str(path)!r}")
        elif not path.parent.exists():
            raise StoreError(f"cannot create database {str(path)!r}: folder does not exist")

    def _check_writable(self) -> None:
        path = self.path
        if self.read_only:
            raise StoreError(f"database {str(path)!r} was opened read-only")
        if path.exists():
            # Checked on the mode bits too: root may write anything, but a file marked
            # read-only is the user saying "don't touch".
            if not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222:
                raise StoreError(f"database {str(path)!r} is read-only")
        elif not path.parent.exists():
            raise StoreError(f"cannot create database {str(path)!r}: folder does not exist")
        elif not os.access(path.parent, os.W_OK):
            raise StoreError(f"cannot create database {str(path)!r}: folder is read-only")

    def _migrate_once(self) -> None:
        """Bring the file up to date once per Store: created by the first write, and an
        older file migrated where it may be written (a read-only one is read as it is)."""
        if self._migrated:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            with self._open(read_only=True) as con:
                pending = _pending(con)
            writable = os.access(self.path, os.W_OK) and self.path.stat().st_mode & 0o222
            if not pending or not writable:
                self._migrated = True
                return
        with self._open(read_only=False) as con:
            self._migrate(con)
        self._migrated = True

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


def _pending(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The migrations a file has not applied (all of them before `_migrations` exists)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "_migrations" not in tables:
        return [fn.__name__ for fn in MIGRATIONS]
    applied = {r[0] for r in con.execute("SELECT name FROM _migrations").fetchall()}
    return [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in applied]


def _wait(seconds: float) -> None:
    """The pause between two tries to open a locked file (a seam for tests)."""
    time.sleep(seconds)


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], rows: Sequence[Sequence]
) -> None:
    """Insert rows with multi-row VALUES statements: several times faster than
    `executemany`, which DuckDB runs one row at a time (a 50-step episode: 9 vs 64 ms)."""
    names = ", ".join(columns)
    group = f"({', '.join('?' for _ in columns)})"
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        con.execute(
            f"INSERT INTO {table} ({names}) VALUES {', '.join(group for _ in chunk)}",
            [value for row in chunk for value in row],
        )


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A listing's filters: `WHERE a = ? AND b = ?` over the (condition, value) pairs whose
    value is given (neither None nor empty), and their values; ("", []) when none is."""
    given = [(sql, value) for sql, value in conditions if value]
    if not given:
        return "", []
    return "WHERE " + " AND ".join(sql for sql, _ in given), [value for _, value in given]


def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) replaced by None, in nested lists and
    dicts too: DuckDB's JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _all(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _one(cur: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    rows = _all(cur)
    return rows[0] if rows else None


def _decode(rows: Iterable[dict[str, Any]], *columns: str, empty: Any = None) -> None:
    """Parse JSON columns in place; NULL becomes `empty`, and a plain string stored in a
    JSON column stays as it is."""
    for row in rows:
        for col in columns:
            value = row.get(col)
            if value is None:
                row[col] = empty() if callable(empty) else empty
            elif isinstance(value, str):
                try:
                    row[col] = json.loads(value)
                except ValueError:
                    pass


def _store_message(path: Path, message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    if "not a valid DuckDB database" in message or "Invalid Input" in message:
        return f"{str(path)!r} is not a DuckDB database"
    if "lock" in first.lower():
        return f"database {str(path)!r} is busy (locked by another process); try again"
    return f"cannot open database {str(path)!r}: {first}"
