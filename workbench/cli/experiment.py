"""`workbench experiment introspective-tips`: the paper's comparison end to end."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.modes import EXPERIMENT, backend, refuse_unused
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    LlmOption,
    MaxTipsOption,
    ModelOption,
    SelectOption,
    TableFormat,
    TableFormatOption,
    command_group,
    open_store,
)
from workbench.cli.render import status, write_json
from workbench.errors import WorkbenchError

app = command_group("Run a paper's experiment end to end.")


@app.command("introspective-tips")
def introspective_tips(
    ctx: typer.Context,
    train: Path = typer.Option(..., "--train", help="Game-set folder of training games."),
    test: Path = typer.Option(..., "--test", help="Game-set folder of unseen test games."),
    trials: int = typer.Option(
        3, "--trials", min=1, help="Trials per training game and condition."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Experiment name; an unfinished experiment of this name resumes."
    ),
    llm: str = LlmOption,
    select: str = SelectOption,
    max_tips: int = MaxTipsOption,
    max_steps: int = typer.Option(50, "--max-steps", min=1, help="Commands per episode at most."),
    parallel: int = typer.Option(
        8, "--parallel", min=1, help="Games stepping (and prompted) together."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds random choices."),
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    gpus: int | None = GpusOption,
) -> None:
    """Introspective Tips (Chen et al. 2023): none/reflexion/self/expert on the training
    games over K trials, a general tip set merged from them, then none vs general zero-shot
    on the test games; a table of success, normalised score and moves to win with 95% CIs.

    With --adapter (from `workbench finetune`), the fine-tuned model also plays the same
    games: `finetuned` (no tips) and `finetuned+self`, tips beside fine-tuning.

    With --gpus N (or under torchrun) each trial's games split over the GPUs, one model
    replica a GPU; rank 0 writes the tips between trials and stores everything.

    Example: workbench experiment introspective-tips --train game-sets/train
    --test game-sets/test --trials 3 --llm openai:gpt-4o-mini --select generate --format json
    """
    refuse_unused(ctx, EXPERIMENT[backend(llm)])
    import games as game_sets
    from agents.experiment import introspective_tips as run_experiment
    from agents.tips import TipWriter
    from workbench.cli import launch
    from workbench.llm import LLMUnavailableError, make_llm
    from workbench.store import new_id

    # --gpus N: this command again under torchrun, then exit
    launch.start(gpus, device, local_model=backend(llm) == "local")
    train_games = game_sets.list_games(train)
    test_games = game_sets.list_games(test)
    store = open_store(db)
    name = name or f"introspective-tips-{new_id()}"
    language_model = make_llm(llm, model=model, device=device, dtype=dtype, progress=True)
    finetuned = (
        make_llm(llm, model=model, device=device, dtype=dtype, adapter=adapter, progress=True)
        if adapter is not None
        else None
    )
    try:
        result = run_experiment(
            train_games,
            test_games,
            llm=language_model,
            store=store,
            name=name,
            trials=trials,
            writer=TipWriter(language_model, max_tips=max_tips),
            parallel=parallel,
            max_steps=max_steps,
            seed=seed,
            select=select,
            on_phase=status,
            finetuned=finetuned,
        )
    except LLMUnavailableError as exc:
        raise WorkbenchError(f"{exc}; what finished is saved, resume with --name {name}") from exc
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    Console().print(experiment_table(result))
    status(
        f"stored as experiment {name}; general tip set {result.general.id}"
        f" ({result.tip_failures} tip-writing failure(s))"
    )


def experiment_table(result) -> Table:
    """The experiment's rows as a table (phase, level, condition, trial; CIs over games)."""
    from agents.report import Estimate, paired_text

    table = Table(
        "phase",
        "level",
        "condition",
        "trial",
        "games",
        "success [95% CI]",
        "score [95% CI]",
        "moves to win",
        "success vs none",
        "score vs none",
        title=f"Introspective Tips: {result.name}",
    )
    for r in result.rows:
        row = r.row
        table.add_row(
            r.phase,
            str(row.level or "?"),
            row.condition,
            str(r.trial),
            str(row.games),
            Estimate.text(row.success),
            Estimate.text(row.score),
            "" if row.steps_to_win is None else f"{row.steps_to_win:.1f}",
            paired_text(r.vs_baseline.success) if r.vs_baseline else "",
            paired_text(r.vs_baseline.score, percent=False) if r.vs_baseline else "",
        )
    return table
