"""`workbench tcav`, `workbench steer`, `workbench rsa`: concepts over a run's decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.modes import ONLY, RSA, STEER, TCAV, refuse_unused
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
    writable_file,
)
from workbench.cli.render import progress, status, working, write_json
from workbench.errors import WorkbenchError

RunOption = typer.Option(..., "--run", help="The play run whose decisions are read.")
ConceptOption = typer.Option(
    None,
    "--concept",
    help="A fact pattern: in(knife, I), sliced(*carrot*), roasted(ingredient_*), carried:knife.",
)
CandidateOption = typer.Option(
    None,
    "--candidate",
    help="Explain the choice of this command wherever it was a candidate, * a wildcard "
    "('take knife*'); default: the command each decision chose.",
)
WhereOption = typer.Option(
    "any", "--where", help="any, or only decisions where the concept held (true) or not (false)."
)
MaxDecisionsOption = typer.Option(
    None, "--max-decisions", min=1, help="Read only the run's first N decisions."
)
SaveOption = typer.Option(True, "--save/--no-save", help="Save the result in the store.")
PlotOption = typer.Option(None, "--plot", help="Write the figure to this PNG.")
SeedOption = typer.Option(0, "--seed", min=0, help="Fixes resamples and random directions.")


def tcav(
    ctx: typer.Context,
    run: str = RunOption,
    concept: str = typer.Option(..., "--concept", help=ConceptOption.help),
    layers: str = typer.Option("all", "--layers", help="all, or e.g. 0,6,12 or 10-20."),
    source: str = typer.Option("means", "--source", help="means (class means) or probe."),
    positions: str = typer.Option(
        "last", "--positions", help="last (the decision token), prompt or all."
    ),
    candidate: str | None = CandidateOption,
    where: str = WhereOption,
    n_random: int = typer.Option(20, "--random", min=20, help="Random directions (the null)."),
    resamples: int = typer.Option(
        10, "--resamples", min=2, help="Concept directions from resampled examples."
    ),
    max_decisions: int | None = MaxDecisionsOption,
    seed: int = SeedOption,
    plot: Path | None = PlotOption,
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = SaveOption,
    gpus: int | None = GpusOption,
) -> None:
    """Concept sensitivity (TCAV): does the agent's choice move along a game fact?

    For each decision, the directional derivative of log p(chosen | candidates) along the
    concept's direction at each layer; the TCAV score is the fraction of decisions where it
    is positive, tested against random directions of the same norm (two-sided Welch test,
    Bonferroni over layers). The concept's direction is read from the run's own decisions,
    labelled by the facts true when they were taken.

    Example: workbench tcav --run valid-ft --concept "in(knife, I)" --candidate "take knife"
    --where false --layers 0-30 --plot tcav.png
    """
    refuse_unused(ctx, TCAV[ONLY])
    from agents.concepts import check_where
    from explainers.concepts.steering import check_positions
    from explainers.params import parse_int_list
    from games.probing_data import concept_holds

    concept_holds(concept)
    _check_source(source, ("means", "probe"))
    check_positions(positions)
    if positions == "front":
        raise WorkbenchError("TCAV takes positions last, prompt or all")
    check_where(where)
    layer_list = None if layers == "all" else parse_int_list("--layers", layers)
    writable_file(plot, "--plot")
    store, lm = start_on_runs(run, model, adapter, device, dtype, gpus, db, save=save)
    from agents.concepts import run_tcav

    with progress("explaining decisions (one backward each)") as update:
        result = run_tcav(
            store,
            run,
            concept,
            lm=lm,
            layers=layer_list,
            source=source,
            positions=positions,
            candidate=candidate,
            where=where,
            n_random=n_random,
            resamples=resamples,
            max_decisions=max_decisions,
            seed=seed,
            progress=update,
        )
    _finish(result, "tcav", store, save, run, plot, fmt, _tcav_table)


def steer(
    ctx: typer.Context,
    run: str = RunOption,
    concept: str | None = ConceptOption,
    layer: int | None = typer.Option(
        None, "--layer", min=0, help="The resid layer steered (0 = embeddings)."
    ),
    source: str = typer.Option(
        "means", "--source", help="means, probe (from the run's facts), caa (--pairs) or actadd."
    ),
    direction_file: Path | None = typer.Option(
        None, "--direction", help="A saved direction (.npz) instead of --source."
    ),
    pairs: Path | None = typer.Option(
        None, "--pairs", help="caa: JSONL of {positive, negative} prompts."
    ),
    plus: str | None = typer.Option(None, "--plus", help="actadd: the prompt added."),
    minus: str | None = typer.Option(None, "--minus", help="actadd: the prompt subtracted."),
    alphas: str = typer.Option(
        "-8,-4,-2,0,2,4,8",
        "--alphas",
        help="Comma-separated multiples of the direction (negative first: --alphas=-8,-4,4,8).",
    ),
    positions: str = typer.Option(
        "all", "--positions", help="all, prompt, last (the decision token); front for actadd."
    ),
    candidate: str | None = CandidateOption,
    where: str = WhereOption,
    n_random: int = typer.Option(5, "--random", min=1, help="Random directions (the control)."),
    games: int = typer.Option(
        0, "--games", min=0, help="Also play this many of the run's games steered."
    ),
    episode_alphas: str | None = typer.Option(
        None, "--episode-alphas", help="With --games: alphas played (default 0 and extremes)."
    ),
    save_direction: Path | None = typer.Option(
        None, "--save-direction", help="Write the direction used to this .npz."
    ),
    max_decisions: int | None = MaxDecisionsOption,
    seed: int = SeedOption,
    plot: Path | None = PlotOption,
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = SaveOption,
    gpus: int | None = GpusOption,
) -> None:
    """Steering: add alpha times a concept direction to the residual stream at one layer.

    Reports the dose-response: the probability of the explained command (the chosen one,
    or --candidate) as alpha grows, along the direction and along random directions of
    the same norm, with the paired difference and its 95% interval per alpha. With --games,
    whole episodes are played under the direction and the win rate and score reported.

    Example: workbench steer --run valid-ft --concept "in(knife, I)" --layer 12
    --candidate "take knife" --where false --alphas -8,-4,0,4,8
    """
    mode = "file" if direction_file is not None else source
    if mode not in STEER_SOURCES:
        raise WorkbenchError(f"--source must be means, probe, caa or actadd, not {source!r}")
    refuse_unused(ctx, STEER[(mode, "episodes" if games else "decisions")])
    from agents.concepts import check_where
    from explainers.concepts.steering import check_alphas, check_positions

    alpha_list = check_alphas(_split(alphas))
    episode_list = None if episode_alphas is None else check_alphas(_split(episode_alphas))
    check_positions(positions)
    check_where(where)
    if concept is not None or mode in ("means", "probe"):
        from games.probing_data import concept_holds

        if concept is None:
            raise WorkbenchError(f"--source {mode} reads the direction from --concept FACT")
        concept_holds(concept)
    if where != "any" and concept is None and mode != "file":
        raise WorkbenchError("--where needs --concept (the fact that holds or not)")
    if mode != "file" and layer is None:
        raise WorkbenchError(f"--source {mode} needs --layer")
    if mode == "actadd" and (plus is None or minus is None):
        raise WorkbenchError("--source actadd needs --plus and --minus prompts")
    if mode == "actadd" and positions != "front":
        raise WorkbenchError("--source actadd goes at the prompt's front: give --positions front")
    if positions == "front" and mode not in ("actadd", "file"):
        raise WorkbenchError("--positions front takes an ActAdd direction (--source actadd)")
    pair_list = _read_pairs(pairs) if mode == "caa" else None
    writable_file(plot, "--plot")
    if save_direction is not None and save_direction.suffix != ".npz":
        raise WorkbenchError(f"--save-direction writes an .npz file, not {save_direction.name!r}")
    loaded = None
    if direction_file is not None:
        from explainers.concepts.directions import ConceptDirection

        if not direction_file.is_file():
            raise WorkbenchError(f"--direction: no direction file at {str(direction_file)!r}")
        loaded = ConceptDirection.load(direction_file)
        if where != "any":
            from games.probing_data import concept_holds

            concept_holds(concept or loaded.concept)
    store, lm = start_on_runs(run, model, adapter, device, dtype, gpus, db, save=save)
    from agents.concepts import run_decisions, run_steering

    # A direction from the run's facts reads every decision: read them once for both.
    decisions = run_decisions(store, run, lm) if mode in ("means", "probe") else None
    direction = _direction(
        store, run, lm, mode, loaded, concept, layer, pair_list, plus, minus, seed, decisions
    )
    if where != "any" and concept is not None:
        direction.concept = concept  # --where reads this fact

    with progress("steering decisions") as update:
        result = run_steering(
            store,
            run,
            direction,
            alpha_list,
            lm=lm,
            positions=positions,
            candidate=candidate,
            where=where,
            n_random=n_random,
            max_decisions=max_decisions,
            games=games,
            episode_alphas=episode_list,
            seed=seed,
            progress=update,
            decisions=decisions,
        )
    from workbench import distributed

    if save_direction is not None and distributed.is_main():
        direction.save(save_direction)
        status(f"wrote {save_direction}")
    _finish(result, "steer", store, save, run, plot, fmt, _steer_tables)


def rsa(
    ctx: typer.Context,
    runs: str = typer.Option(..., "--runs", help="Play runs whose states are read: R1,R2."),
    layers: str = typer.Option("all", "--layers", help="all, or e.g. 0,6,12 or 10-20."),
    metric: str = typer.Option(
        "cosine", "--metric", help="The model's distance: cosine, correlation or euclidean."
    ),
    permutations: int = typer.Option(
        1000, "--permutations", min=1, help="Relabellings in the permutation test."
    ),
    max_states: int | None = typer.Option(
        None, "--max-states", min=4, help="Read only the first N states."
    ),
    seed: int = SeedOption,
    plot: Path | None = PlotOption,
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = SaveOption,
    gpus: int | None = GpusOption,
) -> None:
    """Representational similarity: which layers' geometry mirrors the game state?

    Per layer, Spearman's rho between the residual stream's dissimilarities at the decision
    token and the Jaccard distances of the true facts, over every recorded state, with a
    permutation test and noise ceilings from repeated states.

    Example: workbench rsa --runs valid-ft --layers all --plot rsa.png
    """
    refuse_unused(ctx, RSA[ONLY])
    from explainers.concepts.rsa import METRICS
    from explainers.params import parse_int_list

    names = [r.strip() for r in runs.split(",") if r.strip()]
    if not names:
        raise WorkbenchError("--runs names no run")
    if metric not in METRICS or metric == "jaccard":
        raise WorkbenchError(f"--metric must be cosine, correlation or euclidean, not {metric!r}")
    layer_list = None if layers == "all" else parse_int_list("--layers", layers)
    writable_file(plot, "--plot")
    store, lm = start_on_runs(names[0], model, adapter, device, dtype, gpus, db, names, save=save)
    from agents.concepts import run_rsa

    with progress("reading states") as update:
        result = run_rsa(
            store,
            names,
            lm=lm,
            layers=layer_list,
            metric=metric,
            permutations=permutations,
            max_states=max_states,
            seed=seed,
            progress=update,
        )
    _finish(result, "rsa", store, save, names[0], plot, fmt, _rsa_table)


# -- shared steps -----------------------------------------------------------------------------

STEER_SOURCES = ("file", "means", "probe", "caa", "actadd")


def _split(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.split(",")) if part]


def _check_source(source: str, allowed: tuple[str, ...]) -> None:
    if source not in allowed:
        raise WorkbenchError(f"--source must be {' or '.join(allowed)}, not {source!r}")


def _read_pairs(path: Path | None) -> list[tuple[str, str]]:
    from workbench.files import read_jsonl

    if path is None:
        raise WorkbenchError("--source caa needs --pairs FILE.jsonl of {positive, negative}")
    out = []
    for number, record in read_jsonl(path, "pairs"):
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), str) and record.get(k) for k in ("positive", "negative")
        ):
            raise WorkbenchError(f"{path.name} line {number}: needs positive and negative text")
        out.append((record["positive"], record["negative"]))
    if not out:
        raise WorkbenchError(f"{path.name} has no pairs")
    return out


def start_on_runs(
    run: str,
    model: str | None,
    adapter: Path | None,
    device: str,
    dtype: str,
    gpus: int | None,
    db: Path | None,
    check_runs: list[str] | None = None,
    *,
    save: bool = True,
):
    """(store on rank 0 else None, the model): the run's own model unless --model or
    --adapter names another. The runs are checked before any model loads; with --no-save
    the store is opened read-only (nothing created, migrated or written)."""
    from workbench import distributed
    from workbench.cli import launch
    from workbench.store import runs as run_store

    launch.start(gpus, device)  # --gpus N: this command again under torchrun, then exit
    store = open_store(db, read_only=not save)
    records = distributed.on_main(
        lambda: [run_store.require_run(store, r, kind="play") for r in (check_runs or [run])]
    )
    record = records[0]  # the model is the first run's
    if model is not None or adapter is not None:
        from workbench.models import load_model

        lm = load_model(model, device=device, dtype=dtype, progress=True, adapter=adapter)
    else:
        from agents.recorded_step import record_model

        lm = record_model(record, device=device, dtype=dtype, progress=True)
    return store, lm


def _direction(store, run, lm, mode, loaded, concept, layer, pairs, plus, minus, seed, decisions):
    if mode == "file":
        return loaded
    if mode in ("means", "probe"):
        from agents.concepts import run_direction

        with working(f"reading the direction of {concept} at layer {layer}"):
            return run_direction(
                store, run, concept, layer, lm=lm, source=mode, seed=seed, decisions=decisions
            )
    from workbench.anatomy import model_anatomy

    (layer,) = model_anatomy(lm).check_layers("resid", [layer])
    if mode == "caa":
        from explainers.concepts.directions import caa_direction

        return caa_direction(lm, pairs, layer, concept=concept or "caa")
    from explainers.concepts.directions import actadd_direction

    return actadd_direction(lm, plus, minus, layer, concept=concept)


def _finish(result, kind: str, store, save: bool, run: str, plot, fmt, table) -> None:
    """Rank 0: saved, plotted and shown."""
    from workbench import distributed

    if not distributed.is_main():
        return
    if save:
        from workbench.store import runs as run_store

        result.save(store, run_id=run_store.require_run(store, run)["id"])
    record = result.to_dict()
    if plot is not None:
        from explainers.concepts import plot as plots

        figure = {"tcav": plots.tcav_figure, "steer": plots.steering_figure}.get(
            kind, plots.rsa_figure
        )(record)
        plots.save_figure(figure, plot)
        status(f"wrote {plot}")
    if fmt is TableFormat.json:
        write_json(record)
        return
    out = Console()
    for t in table(result):
        out.print(t)
    if save:
        status(f"saved as {kind} result {result.id} in {store.path}")


def _p(value: float) -> str:
    return f"{value:.3g}"


def _tcav_table(result) -> list[Table]:
    table = Table(
        "layer",
        "TCAV score",
        "random (mean ± sd)",
        "p",
        "corrected p",
        "differs",
        "mean sensitivity",
        title=(
            f"TCAV of {result.concept!r}: {result.n_decisions} decisions, concept from "
            f"{result.n_positive} positive / {result.n_negative} negative states"
        ),
    )
    for r in result.layers:
        table.add_row(
            str(r.layer),
            f"{r.score:.3f}",
            f"{r.random_mean:.3f} ± {r.random_std:.3f}",
            _p(r.p_value),
            _p(r.p_corrected),
            "yes" if r.significant else "no",
            f"{r.mean_sensitivity:+.4f}",
        )
    return [table]


def _steer_tables(result) -> list[Any]:
    effects = Table(
        "alpha",
        "concept change",
        "random change",
        "difference [95% CI]",
        "p",
        title=(
            f"steering along {result.concept!r} at layer {result.layer} "
            f"(norm {result.direction['norm']:.3g}): {result.n_decisions} decisions"
        ),
    )
    for e in result.effects:
        effects.add_row(
            f"{e.alpha:+g}",
            f"{e.concept_change:+.4f}",
            f"{e.random_change:+.4f}",
            f"{e.difference:+.4f} [{e.low:+.4f}, {e.high:+.4f}]",
            _p(e.p_value),
        )
    tables: list[Any] = [effects]
    if result.episodes:
        played = Table("direction", "alpha", "won", "win rate [95% CI]", "mean score")
        for o in result.episodes:
            played.add_row(
                o.direction,
                f"{o.alpha:+g}",
                f"{o.won}/{o.episodes}",
                f"{o.win_rate:.2f} [{o.low:.2f}, {o.high:.2f}]",
                f"{o.mean_score:.3f}",
            )
        tables.append(played)
    return tables


def _rsa_table(result) -> list[Table]:
    table = Table(
        "layer",
        "rho",
        "p",
        "noise ceiling",
        title=(
            f"RSA ({result.metric} vs Jaccard of facts): {result.n_states} states, "
            f"{result.n_unique} distinct, {result.n_repeated} repeated"
        ),
    )
    for r in result.layers:
        ceiling = "-" if r.ceiling is None else f"{r.ceiling:.3f}"
        table.add_row(str(r.layer), f"{r.rho:+.3f}", _p(r.p_value), ceiling)
    return [table]
