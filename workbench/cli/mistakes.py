"""`workbench mistakes`: the agent's mistakes in a play run, judged against TextWorld's
winning plan (`agents.mistakes`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.cli.options import DbOption, TableFormat, TableFormatOption, open_store
from workbench.cli.render import print_plain, progress, status, write_json

if TYPE_CHECKING:
    from agents.mistakes import JudgedStep, MistakeReport
    from workbench.stats import Interval


def mistakes(
    run: str = typer.Option(..., "--run", help="Play run name or id (see `workbench runs list`)."),
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """Which commands were mistakes: the failed episodes with their first mistake, and
    mistake rates by level and by kind of decision (optimal verb -> verb chosen).

    A step is a mistake when it loses the game or lengthens TextWorld's shortest winning
    plan (its regret: the moves it added). Episodes recorded before the miner are judged
    first, by replaying their commands in their game files, and the verdicts are stored.

    Example: workbench mistakes --run l3-llm --format json
    """
    from agents.mistakes import mine_run, mistake_report

    store = open_store(db)
    with progress("replaying episodes") as update:
        mined = mine_run(store, run, progress=update)
    if mined.mined:
        status(f"judged {mined.mined} older episode(s) ({mined.steps} steps) by replaying them")
    report = mistake_report(store, run)
    if fmt is TableFormat.json:
        write_json(report.to_dict())
        return
    _print_report(report)


def _print_report(report: MistakeReport) -> None:
    out = Console()
    print_plain(
        out,
        f"run {report.run['name']}: {report.mistakes} mistake(s) in {report.decisions}"
        f" decisions of {report.episodes} episode(s), {_rate(report.rate)}",
    )
    failed = Table("episode", "game", "level", "outcome", "first mistake", title="episodes not won")
    failed.columns[0].no_wrap = failed.columns[1].no_wrap = True
    for f in report.failed:
        failed.add_row(
            f.episode_id, f.game, str(f.level or "?"), f.outcome, Text(_first(f.first_mistake))
        )
    if report.failed:
        out.print(failed)
    else:
        status("every episode was won")
    levels = Table("level", "decisions", "mistakes", "rate [95% CI]", title="by level")
    for r in report.by_level:
        levels.add_row(str(r.level or "?"), str(r.decisions), str(r.mistakes), _rate(r.rate))
    out.print(levels)
    kinds = Table(
        "optimal verb",
        "chosen verb",
        "mistakes",
        "of decisions",
        "rate [95% CI]",
        title="by kind of decision",
    )
    for r in report.by_kind:
        kinds.add_row(
            Text(r.optimal_verb),
            Text(r.chosen_verb),
            str(r.mistakes),
            str(r.decisions),
            _rate(r.rate),
        )
    if report.by_kind:
        out.print(kinds)


def _first(step: JudgedStep | None) -> str:
    """A failed episode's first mistake in one cell (shown as plain Text: an LLM's generated
    command can hold anything, rich markup too)."""
    if step is None:
        return "none flagged"
    cost = "lost the game" if step.regret is None else f"regret +{step.regret}"
    return f"step {step.step}: {step.chosen!r} for {step.optimal_command!r} ({cost})"


def _rate(rate: Interval) -> str:
    """A rate with its interval, e.g. "12% [8%, 17%]"; "-" without decisions."""
    if not rate.n:
        return "-"
    return f"{100 * rate.mean:.0f}% [{100 * rate.low:.0f}%, {100 * rate.high:.0f}%]"
