"""`workbench compare`: several attribution methods side by side on one input, with their
faithfulness against a random attribution, optionally stored for the dashboard."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from workbench.cli.options import (
    Aggregate,
    AggregateOption,
    Convention,
    ConventionOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    ParamsForMethodsOption,
    RationaleOption,
    Removal,
    RemovalOption,
    TableFormat,
    TableFormatOption,
    TargetOption,
    method_params_for,
    open_store,
    writable_file,
)
from workbench.cli.render import metric_table, progress, status, write_json
from workbench.errors import WorkbenchError


def compare(
    methods: str = typer.Option(
        "ig,occlusion,lime,shap", "--methods", help="Comma-separated attribution methods."
    ),
    text: str = typer.Option(..., "--text", "-t", help="The input to explain."),
    target: str | None = TargetOption,
    rationale: str | None = RationaleOption,
    plot: Path | None = typer.Option(
        None, "--plot", help="Write deletion/insertion curves of every method to this PNG."
    ),
    fmt: TableFormat = TableFormatOption,
    removal: Removal = RemovalOption,
    convention: Convention = ConventionOption,
    aggregate: Aggregate = AggregateOption,
    random_reference: bool = typer.Option(
        True, "--random/--no-random", help="Also evaluate a random attribution (the floor)."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    param: list[str] = ParamsForMethodsOption,
    db: Path | None = typer.Option(
        None,
        "--db",
        help="Store the comparison (every method's explanation and metrics) in this DuckDB "
        "file, for the dashboard's methods side by side (default: $WORKBENCH_DB if set; "
        "else nothing is stored).",
    ),
    run_name: str | None = typer.Option(None, "--run-name", help="Name the stored comparison."),
) -> None:
    """Run several attribution methods on one input and compare their faithfulness.

    Example: workbench compare --methods ig,occlusion,lime,shap --text "the milk is in the
    fridge Q" --target " milk" --plot curves.png --db workbench.duckdb
    """
    import os

    from explainers.metrics.compare import (
        compare_methods,
        parse_methods,
        plot_comparison,
        save_comparison,
    )
    from explainers.metrics.plausibility import parse_rationale
    from workbench.cli import launch
    from workbench.models import load_model

    names = parse_methods(methods)
    params = method_params_for(names, param)
    mask = parse_rationale(rationale) if rationale is not None else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise WorkbenchError(f"--plot writes a PNG; name the file *.png, not {plot.name!r}")
    writable_file(plot, "--plot")
    if db is None and os.environ.get("WORKBENCH_DB"):
        db = Path(os.environ["WORKBENCH_DB"])
    if run_name is not None and db is None:
        raise WorkbenchError("--run-name names the stored comparison; give --db FILE to store it")
    store = open_store(db) if db is not None else None
    if store is not None and run_name is not None:
        from workbench.store import runs

        if runs.get_run(store, run_name) is not None:
            raise WorkbenchError(f"run name {run_name!r} is taken; pick another --run-name")
    launch.start(None, device)  # under torchrun: join the job (the inputs split over ranks)
    lm = load_model(model, device=device, dtype=dtype, progress=True)
    pairs: list = []
    with progress(f"comparing {', '.join(names)}") as update:
        results = compare_methods(
            lm,
            text,
            names,
            target,
            rationale=mask,
            params=params,
            aggregate=aggregate.value,
            removal=removal.value,
            convention=convention.value,
            with_random=random_reference,
            progress=update,
            on_explained=lambda exp, evaluation: pairs.append((exp, evaluation)),
        )
    if store is not None:
        run_id = save_comparison(
            store,
            pairs,
            text=text,
            target=target,
            params={
                "removal": removal.value,
                "convention": convention.value,
                "aggregate": aggregate.value,
            },
            name=run_name,
        )
        status(f"saved the comparison as run {run_id} in {store.path}")
    if plot is not None:
        plot_comparison(results, plot)
        status(f"wrote {plot}")
    if fmt is TableFormat.json:
        write_json(
            {
                "text": text,
                "target_tokens": results[0].target_tokens,
                "methods": {r.method: r.to_dict() for r in results},
            }
        )
        return
    Console().print(metric_table(results, f"faithfulness on {text!r}"))
