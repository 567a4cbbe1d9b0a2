"""Schema migrations: an append-only list of small named functions.

Each applied name is recorded in `_migrations`, so a database created by an older version
is brought up to date by running only the functions it has not seen. Never edit or
reorder a migration that has shipped; append a new one.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_runs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            kind VARCHAR NOT NULL,          -- explain, play, experiment, ...
            status VARCHAR NOT NULL,        -- running, finished, failed
            params JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )
        """
    )


@migration
def m002_explanations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE explanations (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,
            method VARCHAR NOT NULL,
            category VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            input_text VARCHAR NOT NULL,
            target_text VARCHAR,
            n_input_tokens INTEGER NOT NULL,
            n_target_tokens INTEGER NOT NULL,
            max_abs_delta DOUBLE,           -- completeness error, where the method has one
            seconds DOUBLE,
            payload JSON NOT NULL,          -- the whole Explanation, as Explanation.to_dict()
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
