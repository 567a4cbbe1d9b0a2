"""`workbench explain`: one input, or every line of a JSONL data set."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from workbench.cli.options import (
    Aggregate,
    AggregateOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    ExplanationFormat,
    ExplanationFormatOption,
    ModelOption,
    ParamOption,
    method_params,
    open_store,
    writable_file,
)
from workbench.cli.render import (
    emit_explanation,
    err_console,
    progress,
    status,
    write_atomically,
    write_json,
)
from workbench.errors import WorkbenchError


def explain(
    text: str | None = typer.Option(None, "--text", "-t", help="The input to explain."),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="JSONL file, one {text, target} per line: explain them all."
    ),
    method: str = typer.Option(
        "ig", "--method", help="Explanation method (unknown names list the known ones)."
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Continuation to attribute (causal LM), or a label name/index (classifier).",
    ),
    generate: int | None = typer.Option(
        None, "--generate", help="Attribute the model's greedy continuation of N tokens."
    ),
    contrast: str | None = typer.Option(
        None, "--contrast", help="Attribute log p(target) - log p(contrast)."
    ),
    steps: str = typer.Option(
        "32", "--steps", help="Integration steps, or 'auto' to refine until complete."
    ),
    baseline: str = typer.Option(
        "pad", "--baseline", help="pad (the pad token, else EOS), eos or zero."
    ),
    aggregate: Aggregate = AggregateOption,
    fmt: ExplanationFormat = ExplanationFormatOption,
    out: Path | None = typer.Option(
        None, "--out", help="Write the html/json rendering to this file."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Save the explanation in the store."),
    param: list[str] = ParamOption,
    llm: str = typer.Option(
        "local",
        "--llm",
        help="Prompting methods: local (the --model) or openai:MODEL (OPENAI_BASE_URL).",
    ),
) -> None:
    """Explain which input tokens drove a model's output.

    Example: workbench explain --method ig --text "The milk is in the fridge. To get the
    milk, open the" --target " fridge"
    """
    from explainers import get_method

    if (text is None) == (dataset is None):
        raise WorkbenchError("give either --text or --dataset")
    writable_file(out)
    if dataset is not None:
        _check_dataset_options(target, aggregate, fmt)
    explainer = get_method(method)  # fail on an unknown name before loading anything
    params = method_params(explainer, {"steps": steps, "baseline": baseline}, param)
    items = _dataset_items(dataset, generate, contrast) if dataset is not None else None
    store = open_store(db) if save else None  # a bad database fails before the slow part
    if llm != "local":
        params["llm"] = _prompting_llm(explainer, llm, model, device, dtype)
        lm = getattr(params["llm"], "lm", None)  # an endpoint answers by itself: no weights
    else:
        lm = _load_model(model, device, dtype)
    if items is not None:
        _explain_dataset(lm, items, method, params, store, fmt, out)
        return
    from explainers import explain as run_explain

    exp = run_explain(
        lm,
        text,
        method=method,
        target=target,
        generate=generate,
        contrast=contrast,
        aggregate=aggregate.value,
        **params,
    )
    if store is not None:
        exp.save(store)
    emit_explanation(exp, fmt, out)
    if store is not None and fmt is not ExplanationFormat.json:
        status(f"saved as explanation {exp.id} in {store.path}")


def _load_model(model: str | None, device: str, dtype: str):
    """The model, behind a spinner on stderr (shown only on a terminal)."""
    with err_console.status(f"loading {model or 'the default model'}"):
        from workbench.models import load_model

        return load_model(model, device=device, dtype=dtype, progress=True)


def _check_dataset_options(target: str | None, aggregate: Aggregate, fmt) -> None:
    """Options that mean something for one input only are errors with --dataset."""
    if target is not None:
        raise WorkbenchError("with --dataset, targets come from the file's lines; drop --target")
    if aggregate is not Aggregate.token:
        raise WorkbenchError("--aggregate word applies to --text; --dataset explains tokens")
    if fmt is ExplanationFormat.html:
        raise WorkbenchError("--dataset writes JSONL (--format json --out FILE), not html")


def _dataset_items(dataset: Path, generate: int | None, contrast: str | None) -> list[dict]:
    """The data set's lines; --generate and --contrast apply to every line."""
    from explainers.metrics.compare import load_dataset

    items = []
    for it in load_dataset(dataset):
        item: dict[str, object] = {"text": it.text, "target": it.target}
        if generate is not None:
            item["generate"] = generate
        if contrast is not None:
            item["contrast"] = contrast
        items.append(item)
    return items


def _explain_dataset(lm, items, method, params, store, fmt: ExplanationFormat, out: Path | None):
    """Data-set mode: padded batches across inputs; all saved in one transaction."""
    import json

    from explainers.attribution.ig_batch import explain_dataset
    from workbench.store import explanations as explanations_store

    start = time.perf_counter()
    with progress(f"{method} on {len(items)} inputs", total=len(items)) as advance:
        exps = explain_dataset(lm, items, method, on_done=lambda _: advance(), **params)
    seconds = time.perf_counter() - start
    records = [json.loads(e.to_json()) for e in exps]
    ids = explanations_store.save_explanations(store, records) if store is not None else []
    for exp, exp_id in zip(exps, ids):
        exp.id = exp_id
    if out is not None:
        write_atomically(out, "".join(e.to_json() + "\n" for e in exps))
    if fmt is ExplanationFormat.json:
        write_json(
            {
                "method": method,
                "count": len(exps),
                "seconds": round(seconds, 3),
                "inputs_per_second": round(len(exps) / seconds, 3),
                "ids": ids,
            }
        )
        return
    Console().print(
        f"{method}: {len(exps)} inputs in {seconds:.2f} s ({len(exps) / seconds:.2f} inputs/s)"
        + (f", saved in {store.path}" if store is not None else ""),
        markup=False,
        highlight=False,
    )


def _prompting_llm(explainer, spec: str, model: str | None, device: str, dtype: str):
    """The `--llm` a prompting method asks (other methods need the weights themselves)."""
    from workbench.llm import make_llm

    if explainer.category != "prompting":
        raise WorkbenchError(
            f"--llm applies to prompting methods; {explainer.name} needs local weights (--model)"
        )
    return make_llm(spec, model=model, device=device, dtype=dtype)
