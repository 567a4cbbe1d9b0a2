"""`workbench explanations list|show`: stored explanations read back."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.options import (
    DbOption,
    ExplanationFormat,
    ExplanationFormatOption,
    command_group,
    open_store,
    writable_file,
)
from workbench.cli.render import emit_explanation, status

app = command_group("Read explanations back from the store.")


@app.command("list")
def explanations_list(
    db: Path | None = DbOption,
    limit: int = typer.Option(20, "--limit", min=1, help="How many to show."),
    method: str | None = typer.Option(None, "--method", help="Only this method."),
) -> None:
    """List stored explanations, newest first.

    Example: workbench explanations list --limit 5
    """
    from workbench.models import model_label
    from workbench.store import explanations as explanations_store

    store = open_store(db, read_only=True)
    rows = explanations_store.list_explanations(store, limit=limit, method=method)
    if not rows:
        status("no explanations yet; run `workbench explain --text ...` first")
        return
    from explainers.explanation import DEFAULT_TOLERANCE

    table = Table(caption_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("when", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in ("model", "input", "target"):
        table.add_column(name, overflow="ellipsis", max_width=30)
    table.add_column("max |delta|", no_wrap=True)
    for r in rows:
        delta = "" if r["max_abs_delta"] is None else f"{r['max_abs_delta']:.3g}"
        if r["max_abs_delta"] is not None and _incomplete(store, r["id"]):
            delta += " !"
            table.caption = (
                f"! : a target row misses completeness (|delta| above {DEFAULT_TOLERANCE:.0%} of"
                " the expected change): its scores do not add up; re-run with more steps"
            )
        text = r["input_text"] if len(r["input_text"]) <= 40 else r["input_text"][:37] + "..."
        table.add_row(
            r["id"],
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            r["method"],
            model_label(r["model"], r["model_info"], short=True),
            repr(text),
            repr(r["target_text"] or ""),
            delta,
        )
    Console().print(table)


def _incomplete(store, exp_id: str) -> bool:
    """Whether a stored explanation misses completeness on some row (the list keeps only
    max |delta|; whether it is too large depends on each row's expected change)."""
    from explainers import Explanation

    return bool(Explanation.load(store, exp_id).incomplete_rows())


@app.command("show")
def explanations_show(
    exp_id: str = typer.Argument(..., metavar="ID", help="Explanation id (from `list`)."),
    db: Path | None = DbOption,
    fmt: ExplanationFormat = ExplanationFormatOption,
    out: Path | None = typer.Option(
        None, "--out", help="Write the html/json rendering to this file; - to stdout."
    ),
) -> None:
    """Show one stored explanation.

    Example: workbench explanations show 3f2a9c1b7d10 --format html --out exp.html
    """
    from explainers import Explanation

    writable_file(out)
    emit_explanation(Explanation.load(open_store(db, read_only=True), exp_id), fmt, out)
