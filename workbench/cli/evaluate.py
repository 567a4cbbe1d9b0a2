"""`workbench evaluate` (one explanation, or a data set) and `workbench compare` (methods
side by side on one input): faithfulness and plausibility metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.options import (
    Aggregate,
    AggregateOption,
    Convention,
    ConventionOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    ModelOption,
    ParamsForMethodsOption,
    RationaleOption,
    Removal,
    RemovalOption,
    TableFormat,
    TableFormatOption,
    TargetOption,
    dataset_only_gpus,
    method_params,
    method_params_for,
    open_store,
)
from workbench.cli.render import metric_table, progress, status, write_json
from workbench.errors import WorkbenchError


def evaluate(
    explanation: str | None = typer.Option(
        None, "--explanation", help="Evaluate a stored explanation (id from `explanations list`)."
    ),
    method: str = typer.Option(
        "ig", "--method", help="Method to explain with; with --dataset, a comma-separated list."
    ),
    text: str | None = typer.Option(None, "--text", "-t", help="The input to explain and judge."),
    target: str | None = TargetOption,
    rationale: str | None = RationaleOption,
    dataset: Path | None = typer.Option(
        None, "--dataset", help="JSONL file: one {text, target?, rationale?} per line."
    ),
    fmt: TableFormat = TableFormatOption,
    removal: Removal = RemovalOption,
    convention: Convention = ConventionOption,
    aggregate: Aggregate = AggregateOption,
    random_reference: bool = typer.Option(
        True, "--random/--no-random", help="With --dataset, also summarise a random attribution."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(
        True, "--save/--no-save", help="Store the explanation and its metric values."
    ),
    param: list[str] = ParamsForMethodsOption,
    gpus: int | None = GpusOption,
) -> None:
    """Say how faithful (and, with --rationale, how plausible) an explanation is.

    Example: workbench evaluate --method occlusion --text "the milk is in the fridge Q"
    --target " milk" --rationale 0,1,0,0,0,0,0 --format json
    """
    from explainers.metrics.plausibility import parse_rationale

    modes = [
        m
        for m, given in (("--explanation", explanation), ("--text", text), ("--dataset", dataset))
        if given is not None
    ]
    if len(modes) != 1:
        raise WorkbenchError(
            "give one of --explanation ID, --text TEXT (with --method) or --dataset FILE"
            + (f", not {' and '.join(modes)}" if modes else "")
        )
    dataset_only_gpus(gpus, dataset)
    mask = parse_rationale(rationale) if rationale is not None else None
    if dataset is not None:
        if mask is not None:
            raise WorkbenchError("with --dataset, rationales come from the file's lines")
        from workbench import distributed

        distributed.launch(gpus)  # --gpus N: the data set split over N GPUs (torchrun)
        _evaluate_dataset(
            dataset,
            method,
            param,
            fmt,
            removal,
            convention,
            aggregate,
            random_reference,
            model,
            device,
            dtype,
        )
        return
    from explainers import Explanation
    from explainers import explain as run_explain
    from explainers.metrics import evaluate as evaluate_explanation
    from workbench.models import load_model

    store = open_store(db) if (save or explanation is not None) else None
    if explanation is not None:
        exp = Explanation.load(store, explanation)
        lm = _load_for_explanation(model, exp.model, device, dtype)
    else:
        if "," in method:
            raise WorkbenchError(
                "evaluate takes one --method with --text; use `workbench compare` for several"
            )
        explainer = _attribution_method(method)
        explainer.check_request(text, target, aggregate=aggregate.value)
        params = method_params(explainer, {}, param)
        lm = load_model(model, device=device, dtype=dtype, progress=True)
        exp = run_explain(
            lm, text, method=method, target=target, aggregate=aggregate.value, **params
        )
        if store is not None:
            exp.save(store)
    result = evaluate_explanation(exp, lm, mask, removal=removal.value, convention=convention.value)
    if store is not None and save:
        result.explanation_id = exp.id
        result.save(store)
    if fmt is TableFormat.json:
        sys.stdout.write(result.to_json() + "\n")
        return
    Console().print(metric_table([result], f"{exp.method} on {exp.input_text!r}"))
    if len(result.rows) > 1:
        rows = Table("target", *result.rows[0].keys(), title="per target token")
        for tok, row in zip(result.target_tokens, result.rows):
            rows.add_row(repr(tok), *[f"{v:.4f}" for v in row.values()])
        Console().print(rows)
    if store is not None and save:
        status(f"saved metrics of explanation {exp.id} in {store.path}")


def _evaluate_dataset(
    dataset: Path,
    method: str,
    param: list[str],
    fmt: TableFormat,
    removal: Removal,
    convention: Convention,
    aggregate: Aggregate,
    random_reference: bool,
    model: str | None,
    device: str,
    dtype: str,
) -> None:
    from explainers.metrics.compare import evaluate_dataset, load_dataset, parse_methods
    from workbench.models import load_model

    methods = parse_methods(method)
    params = method_params_for(methods, param)
    items = load_dataset(dataset)
    lm = load_model(model, device=device, dtype=dtype, progress=True)
    with progress(f"{', '.join(methods)} on {len(items)} inputs") as update:
        summaries = evaluate_dataset(
            lm,
            items,
            methods,
            params=params,
            aggregate=aggregate.value,
            removal=removal.value,
            convention=convention.value,
            with_random=random_reference,
            on_result=lambda index, _evaluation: update(index + 1, len(items)),
        )
    if fmt is TableFormat.json:
        write_json(
            {
                "dataset": str(dataset),
                "inputs": len(items),
                "methods": [s.to_dict() for s in summaries],
            }
        )
    else:
        Console().print(metric_table(summaries, f"{len(items)} inputs from {dataset}"))


def _load_for_explanation(model: str | None, exp_model: str, device: str, dtype: str):
    """The model a stored explanation was made with, unless --model names another."""
    from workbench.models import DEFAULT_MODEL, load_model

    name = model if model is not None else (None if exp_model == DEFAULT_MODEL else exp_model)
    return load_model(name, device=device, dtype=dtype, progress=True)


def _attribution_method(name: str):
    """The registered attribution method `name` (metrics need per-token attribution scores)."""
    from explainers import get_method
    from explainers.metrics.compare import parse_methods

    parse_methods([name])
    return get_method(name)
