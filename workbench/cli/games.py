"""`workbench games make|list`: TextWorld cooking game sets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.options import TableFormat, TableFormatOption, command_group, new_folder
from workbench.cli.render import progress, status, write_json

app = command_group("Make and list TextWorld cooking games.")


@app.command("make")
def games_make(
    level: int = typer.Option(
        ..., "--level", min=1, max=10, help="Difficulty level 1-10 (GATA table)."
    ),
    count: int = typer.Option(1, "--count", min=1, help="How many games."),
    seed: int = typer.Option(0, "--seed", min=0, help="Base seed; same seed, same games."),
    split: str = typer.Option("train", "--split", help="train, valid or test."),
    out: Path = typer.Option(..., "--out", help="Game-set folder (created; may hold games)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Games compiled in parallel."),
) -> None:
    """Make tw-cooking games of one level into a game-set folder with a manifest.

    Example: workbench games make --level 3 --count 20 --seed 7 --split train
    --out game-sets/l3
    """
    import games as game_sets

    new_folder(out)
    made = 0

    with progress(f"level {level} games") as update:

        def one_more(_game) -> None:
            nonlocal made
            made += 1
            update(made, count)

        result = game_sets.make(level, count, seed, split, out, jobs=jobs, on_game=one_more)
    status(f"{len(result.added)} new game(s), {len(result.existing)} already there, in {out}")


@app.command("list")
def games_list(
    path: Path = typer.Argument(..., metavar="DIR", help="Game-set folder or one game file."),
    fmt: TableFormat = TableFormatOption,
) -> None:
    """List the games of a game set.

    Example: workbench games list game-sets/l3
    """
    import games as game_sets

    found = game_sets.list_games(path)
    if fmt is TableFormat.json:
        write_json([g.to_dict() for g in found])
        return
    table = Table("id", "level", "split", "seed", "max score", "walkthrough", "ingredients")
    table.columns[0].no_wrap = True  # ids are copied into other commands
    for g in found:
        table.add_row(
            g.id,
            str(g.level or "?"),
            g.split or "",
            "" if g.seed is None else str(g.seed),
            str(g.max_score),
            str(g.walkthrough_steps),
            ", ".join(g.ingredients),
        )
    Console().print(table)
