"""Reading play runs back: `workbench report`, `workbench runs list`, `workbench episodes list`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.options import (
    DbOption,
    TableFormat,
    TableFormatOption,
    command_group,
    open_store,
)
from workbench.cli.render import episodes_table, report_table, status, write_json

REPORT_EPISODES = 20  # the report lists this many episode ids; `episodes list` lists all

runs_app = command_group("Play runs in the store.")
episodes_app = command_group("Episodes of a play run.")


def report(
    run: str | None = typer.Option(None, "--run", help="Run name or id (default: latest)."),
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """Success rate and normalised score per level and condition, with 95% CIs over games.

    Lists the run's first episodes with their ids too (which `explain-step --episode` takes).

    Example: workbench report --run l3-llm --format json
    """
    from agents import report as play_report

    rep = play_report(open_store(db, read_only=True), run)
    if fmt is TableFormat.json:
        write_json(rep.to_dict())
        return
    name = rep.run["name"]
    out = Console()
    out.print(report_table(rep.rows, title=f"run {name} ({rep.run['status']})"))
    out.print(episodes_table(rep.episodes[:REPORT_EPISODES], title="episodes"))
    if len(rep.episodes) > REPORT_EPISODES:
        more = len(rep.episodes) - REPORT_EPISODES
        status(f"{more} more episode(s): workbench episodes list --run {name}")


@runs_app.command("list")
def runs_list(
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """List play runs, newest first, with their episode counts.

    Example: workbench runs list --db workbench.duckdb
    """
    from workbench.store import runs as runs_store

    rows = runs_store.list_runs(open_store(db, read_only=True), kind="play")
    if fmt is TableFormat.json:
        write_json(rows)
        return
    if not rows:
        status("no play runs yet; start one with `workbench play`")
        return
    table = Table("name", "id", "status", "created", "episodes")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for r in rows:
        table.add_row(
            r["name"], r["id"], r["status"], f"{r['created_at']:%Y-%m-%d %H:%M}", str(r["episodes"])
        )
    Console().print(table)


@episodes_app.command("list")
def episodes_list(
    run: str = typer.Option(..., "--run", help="Play run name or id (see `workbench runs list`)."),
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """List a play run's episodes with their ids, for `workbench explain-step --episode`.

    Example: workbench episodes list --run l3-llm
    """
    from workbench.store import play as play_store
    from workbench.store import runs as runs_store

    store = open_store(db, read_only=True)
    record = runs_store.require_run(store, run)
    episodes = play_store.list_episodes(store, record["id"])
    if fmt is TableFormat.json:
        write_json(episodes)
        return
    Console().print(episodes_table(episodes, title=f"run {record['name']}"))
