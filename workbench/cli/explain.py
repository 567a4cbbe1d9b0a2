"""`workbench explain`: one input, or every line of a JSONL data set."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

from workbench.cli.modes import EXPLAIN, backend, refuse_unused, saving
from workbench.cli.options import (
    STDOUT,
    AdapterOption,
    Aggregate,
    AggregateOption,
    DbOption,
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    ExplanationFormat,
    ExplanationFormatOption,
    GpusOption,
    ModelOption,
    ParamOption,
    Results,
    method_params,
    open_results,
    writable_file,
)
from workbench.cli.render import (
    emit_explanation,
    print_plain,
    progress,
    status,
    working,
    write_json,
    write_out,
)
from workbench.errors import WorkbenchError


def explain(
    ctx: typer.Context,
    text: str | None = typer.Option(None, "--text", "-t", help="The input to explain."),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="JSONL file, one {text, target?} per line: explain them all.",
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
        None, "--generate", min=1, help="Attribute the model's greedy continuation of N tokens."
    ),
    contrast: str | None = typer.Option(
        None, "--contrast", help="Attribute log p(target) - log p(contrast)."
    ),
    candidates: str | None = typer.Option(
        None,
        "--candidates",
        help="A decision among these commands, separated by |: --target is the chosen one "
        '(default: the model\'s top-scoring one). Data sets: a "candidates" list per line.',
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="With candidates: choice (log p of the chosen one among them, the default), "
        "margin (over the runner-up) or logprob (the chosen text's log-probability).",
    ),
    steps: str | None = typer.Option(
        None,
        "--steps",
        help="IG: 'auto' (the default for one input) refines until complete; a number fixes it.",
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", help="pad (the default: the pad token, else EOS), eos or zero."
    ),
    aggregate: Aggregate = AggregateOption,
    fmt: ExplanationFormat = ExplanationFormatOption,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write the html/json rendering (JSONL with --dataset) to this file; - to stdout.",
    ),
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
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
    gpus: int | None = GpusOption,
    device_map: str | None = DeviceMapOption,
) -> None:
    """Explain which input tokens drove a model's output.

    Example: workbench explain --method ig --text "The milk is in the fridge. To get the
    milk, open the" --target " fridge"
    """
    if (text is None) == (dataset is None):
        raise WorkbenchError("give either --text or --dataset")
    refuse_unused(
        ctx, EXPLAIN["text" if dataset is None else "dataset", saving(save), backend(llm)]
    )
    from explainers import get_method
    from workbench.cli import launch

    launch.start(gpus, device)  # --gpus N: this command again under torchrun, then exit
    writable_file(out)
    if dataset is not None and fmt is ExplanationFormat.html:
        raise WorkbenchError("--dataset writes JSONL (--format json --out FILE), not html")
    if dataset is None and out is not None and fmt is ExplanationFormat.terminal:
        raise WorkbenchError("--out needs --format html or json")
    # Everything that needs no model is checked before the model loads.
    with working(f"{method}: loading {model or 'the default model'}"):
        explainer = get_method(method)
        request = {"target": target, "generate": generate, "contrast": contrast}
        choice = {"candidates": _candidates(candidates), "objective": objective}
        if dataset is None:
            request.update(choice)
        explainer.check_request(text, **request, aggregate=aggregate.value)
        params = method_params(explainer, {"steps": steps, "baseline": baseline}, param)
        items = _dataset_items(dataset) if dataset is not None else None
        results = open_results(db, save)
        if backend(llm) == "openai":
            params["llm"] = _prompting_llm(explainer, llm, model)
            lm = None  # the endpoint answers: no weights are needed here
        else:
            from workbench.models import load_model

            lm = load_model(
                _local_name(llm, model),
                device=device,
                dtype=dtype,
                progress=True,
                device_map=device_map,
                adapter=adapter,
            )
    if items is not None:
        request["objective"] = objective
        _explain_dataset(lm, items, method, request, aggregate, params, results, fmt, out)
        return
    with progress(f"{method} on the input") as update:  # the method checked above runs
        exp = explainer.explain(
            lm, text, aggregate=aggregate.value, progress=update, **request, **params
        )
    if results.writes:
        exp.save(results.store)
    emit_explanation(exp, fmt, out)
    if results.writes and fmt is not ExplanationFormat.json:
        status(f"saved as explanation {exp.id} in {results.store.path}")


def _dataset_items(dataset: Path) -> list[dict]:
    """The data set's lines as explain_dataset items."""
    from explainers.metrics.compare import load_dataset

    return [
        {"text": it.text, "target": it.target}
        | ({"candidates": it.candidates} if it.candidates is not None else {})
        for it in load_dataset(dataset, candidates=True)
    ]


def _candidates(option: str | None) -> list[str] | None:
    """`--candidates "take knife|open fridge"` as a list."""
    if option is None:
        return None
    return [c.strip() for c in option.split("|")]


def _explain_dataset(
    lm,
    items,
    method,
    request,
    aggregate: Aggregate,
    params,
    results: Results,
    fmt,
    out: Path | None,
):
    """Data-set mode: padded batches across inputs, split over the torchrun ranks (--gpus).
    Rank 0 saves each chunk in one transaction under a run named after the command, so the
    same command run again skips what is stored and resumes.
    --target, --generate and --contrast apply to the lines that set none of their own."""
    from explainers.attribution.ig_batch import explain_dataset
    from workbench import distributed
    from workbench.store import explanations as explanations_store
    from workbench.store import runs as runs_store

    store = results.store  # rank 0's when saving; None on the other ranks and with --no-save
    name = _dataset_run_name(lm, items, method, request, aggregate, params)
    run = runs_store.get_run(store, name, kind="explain-dataset") if store is not None else None
    stored = explanations_store.run_explanations(store, run["id"]) if run else []
    run_id = [run["id"] if run else None]
    new: list[dict] = []

    def save(indices: list[int], exps: list) -> None:
        if run_id[0] is None:
            info = {"method": method, "model": getattr(lm, "name", None), "inputs": len(items)}
            if getattr(lm, "adapter", None):
                info["adapter"] = lm.adapter
            run_id[0] = runs_store.create_run(store, name, "explain-dataset", info)
        records = [
            {**e.to_record(), "extras": {**e.extras, "item": i}} for i, e in zip(indices, exps)
        ]
        ids = explanations_store.save_explanations(store, records, run_id[0])
        new.extend({**r, "id": exp_id} for r, exp_id in zip(records, ids))

    def compute(part: list[dict]) -> list:
        return explain_dataset(lm, part, method, aggregate=aggregate.value, **request, **params)

    weights = _costs(lm, items, request)
    start = time.perf_counter()
    with progress(f"{method} on {len(items)} inputs") as update:
        done = [len(stored)]

        def advance(n: int) -> None:
            done[0] += n
            update(done[0], len(items))

        indices, exps = distributed.run_resumable(
            items,
            compute,
            stored=lambda: [r["extras"]["item"] for r in stored],
            save=save if store is not None else None,
            weights=weights,
            on_chunk=advance,
        )
    seconds = time.perf_counter() - start
    if not distributed.is_main():
        return
    if run_id[0] is not None and (run is None or run["status"] != "finished"):
        runs_store.finish_run(store, run_id[0])
    if not results.saving:  # nothing stored: the records come from this run alone
        new = [{**e.to_record(), "extras": {**e.extras, "item": i}} for i, e in zip(indices, exps)]
    records = sorted(stored + new, key=lambda r: r["extras"]["item"])
    if out is not None:
        write_out(out, "".join(json.dumps(r) + "\n" for r in records))
    rate = len(exps) / seconds if seconds > 0 else 0.0
    if fmt is ExplanationFormat.json and out != STDOUT:  # with --out -, stdout is the JSONL
        write_json(
            {
                "method": method,
                "run": name if results.saving else None,
                "count": len(records),
                "computed": len(exps),
                "skipped": len(stored),
                "seconds": round(seconds, 3),
                "inputs_per_second": round(rate, 3),
                "ids": [r.get("id") for r in records],
            }
        )
        return
    summary = (
        f"{method}: {len(exps)} inputs in {seconds:.2f} s ({rate:.2f} inputs/s)"
        + (f", {len(stored)} stored before" if stored else "")
        + (f", saved in {store.path} as run {name}" if results.saving else "")
    )
    if out == STDOUT:
        status(summary)
    else:
        print_plain(Console(), summary)


def _costs(lm, items: list[dict], request: dict) -> list[float]:
    """An input's cost, to balance the ranks: its tokens x (1 forward + 2 per target token:
    one backward each), counted with the model's tokenizer (characters without one)."""
    texts = [it["text"] for it in items]
    targets = [str(it.get("target") or request.get("target") or "") for it in items]
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        return [len(x) * (1 + 2 * len(t.split())) for x, t in zip(texts, targets)]
    n_text = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    n_target = [len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
    return [(x + t) * (1 + 2 * max(t, 1)) for x, t in zip(n_text, n_target)]


def _dataset_run_name(lm, items, method, request, aggregate: Aggregate, params) -> str:
    """The same command (lines, method, options, model) gets the same run: it resumes."""
    import hashlib

    key = {
        "items": items,
        "method": method,
        "request": request,
        "aggregate": aggregate.value,
        "params": {k: v for k, v in params.items() if k != "llm"},
        "llm": getattr(params.get("llm"), "model", None),
        "model": getattr(lm, "name", None),
        "dtype": str(getattr(lm, "dtype", None)),
    }
    if getattr(lm, "adapter", None):
        key["adapter"] = lm.adapter  # another model: another run
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"explain-{method}-{digest[:12]}"


def _prompting_llm(explainer, spec: str, model: str | None):
    """The endpoint (`--llm openai:MODEL`) a prompting method asks; other methods need the
    weights themselves."""
    from workbench.llm import make_llm

    if explainer.category != "prompting":
        raise WorkbenchError(
            f"--llm applies to prompting methods; {explainer.name} needs local weights (--model)"
        )
    return make_llm(spec, model=model)


def _local_name(llm: str, model: str | None) -> str | None:
    """The local model `--llm local[:NAME]` and `--model` name together (one of them)."""
    name = llm.partition(":")[2]
    if name and model is not None and name != model:
        raise WorkbenchError(f"--llm {llm} and --model {model} name two models; give one")
    return name or model
