"""`workbench export`: one table of the store as Parquet or JSON Lines."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import typer

from workbench.cli.options import STDOUT, DbOption, open_store, writable_file
from workbench.cli.render import status


def export(
    # Plain strings checked by the library: its table list would import duckdb for --help.
    table: str = typer.Option(
        ...,
        "--table",
        help="runs, episodes, steps, llm_calls, explanations, metrics, probes or tips.",
    ),
    fmt: str = typer.Option("parquet", "--format", help="parquet or jsonl."),
    out: Path = typer.Option(
        ..., "--out", help="The file to write (replaced whole); - writes to standard output."
    ),
    run: str | None = typer.Option(None, "--run", help="Only the rows of this run (name or id)."),
    db: Path | None = DbOption,
) -> None:
    """Write one table of the store to a Parquet or JSON Lines file.

    For pandas, polars or DuckDB elsewhere; --run keeps only one run's rows.

    Example: workbench export --table episodes --run l3-llm --format parquet
    --out episodes.parquet
    """
    from workbench.store.export import export_table

    writable_file(out)
    store = open_store(db, read_only=True)
    if out != STDOUT:
        count = export_table(store, table, out, fmt, run=run)
        status(f"wrote {count} {table} row(s) to {out}")
        return
    # `--out -`: the store writes files, so the file is written aside, then copied to stdout.
    with tempfile.TemporaryDirectory() as folder:
        written = Path(folder) / f"{table}.{fmt}"
        count = export_table(store, table, written, fmt, run=run)
        sys.stdout.flush()
        sys.stdout.buffer.write(written.read_bytes())
        sys.stdout.flush()
    status(f"wrote {count} {table} row(s) to standard output")
