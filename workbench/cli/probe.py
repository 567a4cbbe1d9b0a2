"""`workbench probe`: linear probes per layer, with control tasks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceMapOption,
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


def probe(
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
        1, "--random-episodes", help="Random-play episodes per game."
    ),
    max_steps: int = typer.Option(10, "--max-steps", help="Random steps per episode."),
    history: int = typer.Option(2, "--history", help="Previous steps in the agent's text."),
    test_size: float = typer.Option(0.25, "--test-size", help="Held-out fraction (of games)."),
    seed: int = typer.Option(0, "--seed", help="Fixes play, split, control labels and probes."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per forward pass."),
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
    from explainers.probing.plot import plot_probe
    from explainers.probing.probes import ProbeDataset, parse_layers, run_probe
    from workbench import distributed
    from workbench.models import load_model

    if (task is None) == (dataset is None):
        raise WorkbenchError("give either --task (a built-in task) or --dataset FILE.jsonl")
    distributed.launch(gpus)  # --gpus N: this command again under torchrun, then exit
    layer_list = parse_layers(layers)
    writable_file(plot, "--plot")
    if dataset is not None:
        data = ProbeDataset.from_jsonl(dataset)
    else:
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
        data = ProbeDataset.from_records(task, records)
    store = open_store(db) if save else None
    lm = load_model(
        model,
        device=device,
        dtype=dtype,
        progress=fmt is TableFormat.table,
        device_map=device_map,
        adapter=adapter,
    )
    if intervene and lm.kind != "causal":
        raise WorkbenchError(
            "--intervene needs a causal LM (it measures the next token's log-probability); "
            f"{lm.name} is a classifier"
        )
    with progress(f"probing {task or 'the dataset'}") as update:
        result = run_probe(
            lm,
            data,
            layer_list,
            batch_size=batch_size,
            test_size=test_size,
            seed=seed,
            progress=update,
        )
    amnesic = None
    if intervene:
        from explainers.causal.amnesic import amnesic_probing

        with working("amnesic probing: projecting the probes' directions out"):
            amnesic = amnesic_probing(
                lm,
                data,
                layer_list,
                n_random=random_directions,
                max_examples=intervene_examples,
                test_size=test_size,
                seed=seed,
            )
        result.params["intervene"] = amnesic.to_dict()
    if not distributed.is_main():
        return  # every rank extracted its share of the features; rank 0 reports and saves
    if store is not None:
        result.save(store)
    if plot is not None:
        plot_probe(result, plot)
        status(f"wrote {plot}")
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    table = Table(
        "layer",
        "accuracy",
        "control",
        "selectivity",
        "majority",
        title=(
            f"{result.task} on {result.model}: {result.n_examples} examples, {result.split} split "
            f"({result.layers[0].n_train} train / {result.layers[0].n_test} test)"
        ),
    )
    for r in result.layers:
        table.add_row(
            str(r.layer),
            f"{r.accuracy:.3f}",
            f"{r.control_accuracy:.3f}",
            f"{r.selectivity:+.3f}",
            f"{r.majority:.3f}",
        )
    Console().print(table)
    if amnesic is not None:
        Console().print(amnesic_table(amnesic))
    if store is not None:
        status(f"saved as probe {result.id} in {store.path}")


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
