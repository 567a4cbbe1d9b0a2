"""`workbench probe`: linear probes per layer, with control tasks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.modes import PROBE, refuse_unused, saving
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    ModelOption,
    Results,
    TableFormat,
    TableFormatOption,
    open_results,
    writable_file,
)
from workbench.cli.render import progress, status, working, write_json
from workbench.errors import WorkbenchError


def probe(
    ctx: typer.Context,
    task: str | None = typer.Option(
        None, "--task", help="Built-in task: textworld-state:carried, :room or :open."
    ),
    games_dir: Path | None = typer.Option(
        None, "--games", help="Game-set folder (or one game) for textworld-state tasks."
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="JSONL of {text, label, position?, group?, type?} instead of --task.",
    ),
    layers: str = typer.Option(
        "all", "--layers", help="all, or e.g. 0,6,12 or 10-20 (0 = embeddings)."
    ),
    max_games: int | None = typer.Option(
        None, "--max-games", min=1, help="Use only the first N games."
    ),
    random_episodes: int = typer.Option(
        1, "--random-episodes", min=1, help="Random-play episodes per game."
    ),
    max_steps: int = typer.Option(10, "--max-steps", min=1, help="Random steps per episode."),
    history: int = typer.Option(2, "--history", min=0, help="Previous steps in the agent's text."),
    test_size: float = typer.Option(
        0.25, "--test-size", min=0.0, max=1.0, help="Held-out fraction (of games)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Fixes play, split, control labels and probes."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Examples per forward pass."),
    plot: Path | None = typer.Option(None, "--plot", help="Write accuracy by layer to this PNG."),
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Save the result in the store."),
    intervene: bool = typer.Option(
        False,
        "--intervene",
        help="Amnesic probing: project each probe's directions out of the residual stream "
        "and compare the next token's log-probability change with random directions.",
    ),
    random_directions: int = typer.Option(
        5, "--random-directions", min=1, help="With --intervene: random draws, the control."
    ),
    intervene_examples: int = typer.Option(
        32, "--intervene-examples", min=1, help="With --intervene: held-out examples measured."
    ),
    gpus: int | None = GpusOption,
    device_map: str | None = DeviceMapOption,
) -> None:
    """Train linear probes per layer, with control tasks (accuracy, control, selectivity).

    With --intervene, also test whether the model uses what each probe found: its
    directions are projected out of the residual stream at its layer (amnesic probing).

    Example: workbench probe --task textworld-state:carried --games game-sets/l3
    --layers 0,10,20,30 --plot carried.png
    """
    if (task is None) == (dataset is None):
        raise WorkbenchError("give either --task (a built-in task) or --dataset FILE.jsonl")
    mode = ("task" if dataset is None else "dataset", saving(save))
    refuse_unused(ctx, PROBE[(*mode, "intervene" if intervene else "plain")])
    from explainers.params import parse_int_list
    from workbench.cli import launch

    launch.start(gpus, device)  # --gpus N: this command again under torchrun, then exit
    layer_list = parse_int_list("--layers", layers)
    writable_file(plot, "--plot")
    if dataset is not None:
        from explainers.probing.probes import ProbeDataset

        data = ProbeDataset.from_jsonl(dataset)
    else:
        data = _played_dataset(
            task, games_dir, max_games, random_episodes, max_steps, history, seed
        )
    results = open_results(db, save)
    lm = _load(model, adapter, device, dtype, device_map, quiet=fmt is TableFormat.json)
    if intervene and lm.kind != "causal":
        raise WorkbenchError(
            "--intervene needs a causal LM (it measures the next token's log-probability); "
            f"{lm.name} is a classifier"
        )
    kept: list = []  # the features the probes read, for amnesic probing to reuse
    result = _probe(lm, data, layer_list, batch_size, test_size, seed, kept.append)
    amnesic = None
    if intervene:
        amnesic = _amnesic(
            lm, data, result, kept[0], random_directions, intervene_examples, test_size, seed
        )
        result.params["intervene"] = amnesic.to_dict()
    from workbench import distributed

    if not distributed.is_main():
        return  # every rank extracted its share of the features; rank 0 reports and saves
    _report(result, amnesic, fmt, results, plot)


def _played_dataset(
    task: str,
    games_dir: Path | None,
    max_games: int | None,
    random_episodes: int,
    max_steps: int,
    history: int,
    seed: int,
):
    """`--task`: examples from playing the games at random, labelled by the game state."""
    from explainers.probing.probes import ProbeDataset
    from games.probing_data import parse_task, state_records

    parse_task(task)  # an unknown task fails before the games are played
    if games_dir is None:
        raise WorkbenchError(
            f"--task {task} needs --games DIR (make some with `workbench games make`)"
        )
    with working(f"playing {games_dir} for {task} examples"):
        records = state_records(
            games_dir,
            task,
            max_games=max_games,
            random_episodes=random_episodes,
            max_steps=max_steps,
            history=history,
            seed=seed,
        )
    return ProbeDataset.from_records(task, records)


def _load(model, adapter, device: str, dtype: str, device_map, quiet: bool):
    from workbench.models import load_model

    return load_model(
        model,
        device=device,
        dtype=dtype,
        progress=not quiet,
        device_map=device_map,
        adapter=adapter,
    )


def _probe(lm, data, layer_list, batch_size: int, test_size: float, seed: int, on_features):
    """The probes and their control tasks, layer by layer."""
    from explainers.probing.probes import run_probe

    with progress(f"probing {data.task}") as update:
        return run_probe(
            lm,
            data,
            layer_list,
            batch_size=batch_size,
            test_size=test_size,
            seed=seed,
            progress=update,
            on_features=on_features,
        )


def _amnesic(
    lm, data, probed, features, n_random: int, max_examples: int, test_size: float, seed: int
):
    """`--intervene`: each probe's directions projected out of the residual stream (on the
    features and probes just computed, not read and fitted again)."""
    from explainers.causal.amnesic import amnesic_probing

    with working("amnesic probing: projecting the probes' directions out"):
        return amnesic_probing(
            lm,
            data,
            [r.layer for r in probed.layers],
            features=features,
            probe=probed,
            n_random=n_random,
            max_examples=max_examples,
            test_size=test_size,
            seed=seed,
        )


def _report(result, amnesic, fmt: TableFormat, results: Results, plot: Path | None) -> None:
    """Saved, plotted, and shown: the library's probe table with its negative-selectivity
    warning, and the amnesic table under it."""
    from explainers.probing.render import render_probe_terminal

    if results.writes:
        result.save(results.store)
    if plot is not None:
        from explainers.probing.plot import plot_probe

        plot_probe(result, plot)
        status(f"wrote {plot}")
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    out = Console()
    render_probe_terminal(result, out)
    if amnesic is not None:
        out.print(amnesic_table(amnesic))
    if results.writes:
        status(f"saved as probe {result.id} in {results.store.path}")


def amnesic_table(amnesic) -> Table:
    """Per layer: the target's log-probability change with the probe's directions projected
    out, against random directions of the same number."""
    table = Table(
        "layer",
        "directions",
        "probe acc. after",
        "log p change",
        "random change",
        "excess",
        title=(
            f"amnesic probing: {amnesic.layers[0].n_examples if amnesic.layers else 0} held-out "
            f"examples, {amnesic.params['n_random']} random draws per layer"
        ),
    )
    for r in amnesic.layers:
        table.add_row(
            str(r.layer),
            str(r.n_directions),
            f"{r.accuracy_after:.3f}",
            f"{r.logprob_change:+.4f}",
            f"{r.random_change:+.4f} ± {r.random_std:.4f}",
            f"{r.excess:+.4f}",
        )
    return table
