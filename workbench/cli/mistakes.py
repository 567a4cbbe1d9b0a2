"""`workbench mistakes`: the agent's mistakes in a play run, judged against TextWorld's
winning plan (`agents.mistakes`), and with --predict whether the explanations of its
decisions predict them (`agents.mistake_prediction`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.cli.modes import MISTAKES, refuse_unused
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    ModelOption,
    TableFormat,
    TableFormatOption,
    open_store,
)
from workbench.cli.render import print_plain, progress, status, working, write_json

if TYPE_CHECKING:
    from agents.mistake_prediction import PredictionReport
    from agents.mistakes import JudgedStep, MistakeReport
    from workbench.stats import Interval
    from workbench.store import Store


def mistakes(
    ctx: typer.Context,
    run: str = typer.Option(..., "--run", help="Play run name or id (see `workbench runs list`)."),
    predict: bool = typer.Option(
        False,
        "--predict",
        help="Explain every LLM decision of the run (stored per step) and test whether the "
        "explanations predict its mistakes beyond the model's own confidence.",
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="With --predict: write the calibration plot to this PNG."
    ),
    folds: int = typer.Option(
        5, "--folds", min=2, help="With --predict: cross-validation folds, grouped by game."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="With --predict: seed of the folds and the bootstrap."
    ),
    method: str = typer.Option(
        "occlusion",
        "--method",
        help="With --predict: the segment masses: occlusion (leave one segment out: minutes "
        "per hundred decisions on a CPU), segment_shapley or ig (token level; a GPU).",
    ),
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    gpus: int | None = GpusOption,
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """Which commands were mistakes: the failed episodes with their first mistake, and
    mistake rates by level and by kind of decision (optimal verb -> verb chosen).

    A step is a mistake when it loses the game or lengthens TextWorld's shortest winning
    plan (its regret: the moves it added). Episodes recorded before the miner are judged
    first, by replaying their commands in their game files, and the verdicts are stored.

    With --predict, every decision an LLM made is explained (segment masses of the choice,
    margin and entropy over the candidates, attention on summary tokens, a probe's
    confidence; stored per step), and a logistic regression on those features,
    cross-validated with folds grouped by game, is compared with one that sees only the
    margin and the entropy: AUROC of each with bootstrap intervals over games, their
    difference, the coefficients, and a calibration plot with --plot.

    Example: workbench mistakes --run l3-llm --format json

    Example: workbench mistakes --run l3-llm --predict --plot calibration.png
    """
    refuse_unused(ctx, MISTAKES["predict" if predict else "list"])
    from agents.mistakes import mine_run, mistake_report
    from workbench import distributed
    from workbench.cli import launch

    if predict:
        from agents.decision_features import check_method, compute_run_features

        check_method(method)
        launch.start(gpus, device)  # --gpus N: this command again under torchrun, then exit
    if plot is not None:
        from agents.mistake_prediction import check_plot_path

        check_plot_path(plot)
    store = open_store(db)
    if store is not None:  # rank 0 (the one process that may write the store)
        with progress("replaying episodes") as update:
            mined = mine_run(store, run, progress=update)
        if mined.mined:
            status(f"judged {mined.mined} older episode(s) ({mined.steps} steps) by replaying them")
    if predict:
        lm = None
        if model is not None or adapter is not None:
            from workbench.models import load_model

            lm = load_model(model, device=device, dtype=dtype, progress=True, adapter=adapter)
        with progress(f"explaining decisions ({method})") as update:
            compute_run_features(
                store, run, lm=lm, method=method, device=device, dtype=dtype, progress=update
            )
        if not distributed.is_main():
            return
        _predict(store, run, method, plot, folds, seed, fmt)
        return
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


def _predict(
    store: Store, run: str, method: str, plot: Path | None, folds: int, seed: int, fmt: TableFormat
) -> None:
    """The prediction report on the stored explanation features of every decision."""
    from agents.decision_features import feature_frame
    from agents.mistake_prediction import plot_calibration, predict_mistakes

    frame = feature_frame(store, run, method)
    with working("cross-validating and bootstrapping over games"):
        report = predict_mistakes(frame, folds=folds, seed=seed)
    if plot is not None:
        plot_calibration(report, plot)
        status(f"wrote {plot}")
    if fmt is TableFormat.json:
        write_json(report.to_dict())
        return
    _print_prediction(report)


def _print_prediction(report: PredictionReport) -> None:
    out = Console()
    print_plain(
        out,
        f"{report.decisions} decisions ({report.mistakes} mistakes) of {report.games} games,"
        f" {report.folds} folds grouped by game; out-of-fold AUROC with 95% intervals from"
        f" {report.n_boot} bootstrap resamples of games",
    )
    aurocs = Table("model", "features", "AUROC [95% CI]", title="predicting mistakes")
    aurocs.add_row(
        "explanation", ", ".join(report.features), _auroc(report.explanation, signed=False)
    )
    aurocs.add_row(
        "baseline (confidence)",
        ", ".join(report.baseline_features),
        _auroc(report.baseline, signed=False),
    )
    aurocs.add_row("difference", "explanation - baseline", _auroc(report.difference, signed=True))
    out.print(aurocs)
    print_plain(out, report.reading())
    if report.dropped:
        status(f"left out (all missing or constant): {', '.join(report.dropped)}")
    coefficients = Table(
        "feature",
        "coefficient",
        "a higher value makes a mistake",
        title="explanation model, all decisions (log-odds per standard deviation)",
    )
    for c in report.coefficients:
        coefficients.add_row(c.feature, f"{c.coef:+.3f}", "likelier" if c.coef > 0 else "rarer")
    out.print(coefficients)


def _auroc(value: Interval, signed: bool) -> str:
    """An AUROC (or a difference of two) with its interval, e.g. "0.71 [0.64, 0.78]"."""
    form = "{:+.3f}" if signed else "{:.3f}"
    shown = form.format(value.mean)
    if not value.n:
        return f"{shown} [no interval]"
    return f"{shown} [{form.format(value.low)}, {form.format(value.high)}]"


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
