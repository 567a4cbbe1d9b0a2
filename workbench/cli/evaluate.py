"""`workbench evaluate` (one explanation, or a data set) and `workbench compare` (methods
side by side on one input): faithfulness and plausibility metrics."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.modes import EVALUATE, refuse_unused, saving
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
    method_params,
    method_params_for,
    open_results,
    open_store,
)
from workbench.cli.render import metric_table, progress, status, write_json
from workbench.errors import WorkbenchError


def evaluate(
    ctx: typer.Context,
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

    chosen = [
        m
        for m, value in (("explanation", explanation), ("text", text), ("dataset", dataset))
        if value is not None
    ]
    if len(chosen) != 1:
        raise WorkbenchError(
            "give one of --explanation ID, --text TEXT (with --method) or --dataset FILE"
            + (f", not --{' and --'.join(chosen)}" if chosen else "")
        )
    mode = chosen[0]
    refuse_unused(ctx, EVALUATE[("text", saving(save)) if mode == "text" else mode])
    scoring = Scoring(
        {"removal": removal.value, "convention": convention.value}, fmt, model, device, dtype
    )
    if dataset is not None:
        from workbench.cli import launch

        launch.start(gpus, device)  # --gpus N: the data set split over N GPUs (torchrun)
        _evaluate_dataset(dataset, method, param, aggregate, random_reference, scoring)
        return
    mask = parse_rationale(rationale) if rationale is not None else None
    if explanation is not None:
        _evaluate_stored(explanation, mask, scoring, db, save)
    else:
        _evaluate_text(text, method, target, param, aggregate, mask, scoring, db, save)


@dataclass(frozen=True)
class Scoring:
    """What every mode of `evaluate` shares: the metrics' settings, the output format and
    the model to load."""

    metrics: dict[str, str]  # removal, convention
    fmt: TableFormat
    model: str | None
    device: str
    dtype: str

    def load(self):
        from workbench.models import load_model

        return load_model(self.model, device=self.device, dtype=self.dtype, progress=True)


def _evaluate_stored(explanation: str, mask, scoring: Scoring, db: Path | None, save: bool) -> None:
    """`evaluate --explanation ID`: re-score a stored explanation (on the model it was made
    with, unless --model names another)."""
    from explainers import Explanation
    from explainers.metrics import evaluate as evaluate_explanation

    store = open_store(db)
    exp = Explanation.load(store, explanation)
    lm = _load_for_explanation(exp, scoring.model, scoring.device, scoring.dtype)
    result = evaluate_explanation(exp, lm, mask, **scoring.metrics)
    _report(result, exp, store if save else None, scoring.fmt)


def _evaluate_text(
    text: str,
    method: str,
    target: str | None,
    param: list[str],
    aggregate: Aggregate,
    mask,
    scoring: Scoring,
    db: Path | None,
    save: bool,
) -> None:
    """`evaluate --text`: explain one input with one method, then score the explanation."""
    from explainers.metrics import evaluate as evaluate_explanation

    if "," in method:
        raise WorkbenchError(
            "evaluate takes one --method with --text; use `workbench compare` for several"
        )
    explainer = _attribution_method(method)
    explainer.check_request(text, target, aggregate=aggregate.value)
    params = method_params(explainer, {}, param)
    store = open_results(db, save).store  # one process: None means --no-save
    lm = scoring.load()
    exp = explainer.explain(lm, text, target=target, aggregate=aggregate.value, **params)
    if store is not None:
        exp.save(store)
    _report(evaluate_explanation(exp, lm, mask, **scoring.metrics), exp, store, scoring.fmt)


def _report(result, exp, store, fmt: TableFormat) -> None:
    """The metric values on stdout, and saved with the explanation when `store` is given."""
    if store is not None:
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
    if store is not None:
        status(f"saved metrics of explanation {exp.id} in {store.path}")


def _evaluate_dataset(
    dataset: Path,
    method: str,
    param: list[str],
    aggregate: Aggregate,
    random_reference: bool,
    scoring: Scoring,
) -> None:
    """`evaluate --dataset`: every method on every line, summarised per method."""
    from explainers.metrics.compare import evaluate_dataset, load_dataset, parse_methods

    methods = parse_methods(method)
    params = method_params_for(methods, param)
    items = load_dataset(dataset)
    lm = scoring.load()
    with progress(f"{', '.join(methods)} on {len(items)} inputs") as update:
        summaries = evaluate_dataset(
            lm,
            items,
            methods,
            params=params,
            aggregate=aggregate.value,
            with_random=random_reference,
            **scoring.metrics,
            on_result=lambda index, _evaluation: update(index + 1, len(items)),
        )
    if scoring.fmt is TableFormat.json:
        write_json(
            {
                "dataset": str(dataset),
                "inputs": len(items),
                "methods": [s.to_dict() for s in summaries],
            }
        )
    else:
        Console().print(metric_table(summaries, f"{len(items)} inputs from {dataset}"))


def _load_for_explanation(exp, model: str | None, device: str, dtype: str):
    """The model a stored explanation was made with (its base, adapter and dtype), unless
    --model names another."""
    from workbench.models import ModelIdentity, load_identity, load_model

    if model is not None:
        return load_model(model, device=device, dtype=dtype, progress=True)
    # Explanations stored before identities were kept name only their base model.
    identity = ModelIdentity.from_dict(exp.model_info or {"base": exp.model, "dtype": "auto"})
    return load_identity(identity, device=device, dtype=dtype)


def _attribution_method(name: str):
    """The registered attribution method `name` (metrics need per-token attribution scores)."""
    from explainers import get_method
    from explainers.metrics.compare import parse_methods

    parse_methods([name])
    return get_method(name)
