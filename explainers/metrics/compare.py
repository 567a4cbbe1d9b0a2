"""Several attribution methods on one input, judged by the same metrics, side by side; and
many inputs from a JSONL dataset, summarised per method (the evidence a researcher needs to
choose a method). A random attribution is evaluated alongside as the floor to beat.

    >>> from explainers.metrics.compare import compare_methods      # doctest: +SKIP
    >>> evals = compare_methods(lm, "the milk is in the fridge Q", ["ig", "lime"], target="milk")

`save_comparison` stores one comparison as a run of kind "compare" (each method's
explanation with its metric values, the random baseline among them), which the dashboard's
methods side-by-side page shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explainers.explainer import Progress
from explainers.explanation import Explanation
from explainers.metrics.evaluation import (
    Evaluation,
    evaluate,
    explanation_objective,
    random_explanation,
)
from explainers.metrics.plausibility import parse_rationale
from explainers.registry import get_method
from workbench import distributed
from workbench.errors import WorkbenchError
from workbench.files import read_jsonl
from workbench.models import LoadedModel
from workbench.store import Store, runs

RANDOM = "random"


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """ "ig,occlusion" -> ["ig", "occlusion"], each checked against the registry (or "random")."""
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise WorkbenchError("methods is empty; give names like ig,occlusion,lime")
    for name in names:
        if name != RANDOM:
            method = get_method(name)  # unknown names list the known ones
            if method.category != "attribution":
                raise WorkbenchError(
                    f"{name}: {method.category} methods are not judged by the metrics; "
                    "use attribution methods"
                )
    return list(dict.fromkeys(names))


def compare_methods(
    lm: LoadedModel,
    text: str,
    methods: Sequence[str],
    target: str | None = None,
    *,
    rationale: Sequence[int] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    aggregate: str = "token",
    removal: str = "delete",
    convention: str = "eraser",
    with_random: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    on_explained: Callable[[Explanation, Evaluation], None] | None = None,
) -> list[Evaluation]:
    """Explain `text` with each method and evaluate each explanation the same way.

    `params` maps a method name to its own parameters. With `with_random`, a uniformly
    random attribution of the same input is evaluated last, as the floor to beat.
    `progress(methods done, methods)` follows each method; `on_explained(explanation,
    evaluation)` sees each pair as it is made (to store it).
    """
    from explainers import explain

    params = params or {}
    named = [name for name in methods if name != RANDOM]
    total = len(named) + int(with_random or RANDOM in methods)
    judge = {"removal": removal, "convention": convention}
    results: list[Evaluation] = []
    first = None
    for name in named:
        exp = explain(
            lm, text, method=name, target=target, aggregate=aggregate, **params.get(name, {})
        )
        first = first or exp
        result = evaluate(exp, lm, rationale, **judge)
        result.params["explain_seconds"] = exp.seconds
        results.append(result)
        if on_explained is not None:
            on_explained(exp, result)
        if progress is not None:
            progress(len(results), total)
    if first is None:
        first = explain(lm, text, method="occlusion", target=target, aggregate=aggregate)
    if with_random or RANDOM in methods:
        obj = explanation_objective(first, lm)
        reference = random_explanation(first, seed)
        results.append(evaluate(reference, lm, rationale, obj=obj, **judge))
        if on_explained is not None:
            on_explained(reference, results[-1])
        if progress is not None:
            progress(len(results), total)
    return results


def save_comparison(
    store: Store,
    pairs: Sequence[tuple[Explanation, Evaluation]],
    *,
    text: str,
    target: str | None,
    params: dict[str, Any] | None = None,
    name: str | None = None,
) -> str:
    """Store a comparison as a run of kind "compare": each explanation (linked to the run)
    with its metric values, in the order given. Returns the run id."""
    run_id = runs.create_run(
        store,
        name,
        "compare",
        {
            "text": text,
            "target": target,
            "methods": [exp.method for exp, _ in pairs],
            **(params or {}),
        },
    )
    for exp, evaluation in pairs:
        evaluation.explanation_id = exp.save(store, run_id=run_id)
        evaluation.save(store)
    runs.finish_run(store, run_id)
    return run_id


@dataclass
class DatasetItem:
    text: str
    target: str | None = None
    rationale: list[int] | None = None
    candidates: list[str] | None = None  # a decision among these (explainers/choice.py)


@dataclass
class MethodSummary:
    """One method over a dataset: the mean of each metric over inputs, and how many inputs."""

    method: str
    n: int
    metrics: dict[str, float]
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        clean = {k: (None if not np.isfinite(v) else v) for k, v in self.metrics.items()}
        return {"method": self.method, "n": self.n, **clean, "seconds": self.seconds}


def load_dataset(path: Path, candidates: bool = False) -> list[DatasetItem]:
    """JSONL: one object per line with "text", optional "target" and "rationale"; with
    `candidates`, also an optional "candidates" list (the target is the chosen one)."""
    keys = {"text", "target", "rationale"} | ({"candidates"} if candidates else set())
    items = []
    for number, record in read_jsonl(path, "dataset"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise WorkbenchError(f'{path}:{number}: each line needs a "text" string')
        unknown = set(record) - keys
        if unknown:
            hint = "; candidates apply to explain --dataset" if "candidates" in unknown else ""
            raise WorkbenchError(
                f"{path}:{number}: unknown keys {sorted(unknown)}; use "
                f"{', '.join(sorted(keys))}{hint}"
            )
        choices = record.get("candidates")
        if choices is not None and (
            not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
        ):
            raise WorkbenchError(f"{path}:{number}: candidates must be a list of strings")
        rationale = record.get("rationale")
        try:
            parsed = None if rationale is None else parse_rationale(rationale)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}:{number}: {exc}") from None
        target = record.get("target")
        items.append(
            DatasetItem(record["text"], None if target is None else str(target), parsed, choices)
        )
    if not items:
        raise WorkbenchError(f"{path} holds no inputs")
    return items


def evaluate_dataset(
    lm: LoadedModel,
    items: Sequence[DatasetItem],
    methods: Sequence[str],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    aggregate: str = "token",
    removal: str = "delete",
    convention: str = "eraser",
    with_random: bool = True,
    on_result: Callable[[int, Evaluation], None] | None = None,
    progress: Progress | None = None,
) -> list[MethodSummary]:
    """Evaluate every method on every item; one summary (means over inputs) per method.

    `on_result(item_index, evaluation)` sees each evaluation as it is made (to store it);
    `progress(items done, items)` follows each item (of this rank's share under torchrun).
    """
    mine: list[list[Evaluation]] = []
    # Under torchrun each rank evaluates its block of the items; all ranks get every result.
    share = distributed.shard(list(enumerate(items)))
    for done, (i, item) in enumerate(share, start=1):
        try:
            results = compare_methods(
                lm,
                item.text,
                methods,
                item.target,
                rationale=item.rationale,
                params=params,
                aggregate=aggregate,
                removal=removal,
                convention=convention,
                with_random=with_random,
                seed=i,
            )
        except WorkbenchError as exc:
            raise WorkbenchError(f"dataset line {i + 1}: {exc}") from None
        mine.append(results)
        if on_result is not None:
            for result in results:
                on_result(i, result)
        if progress is not None:
            progress(done, len(share))
    collected: dict[str, list[Evaluation]] = {}
    for results in distributed.all_gather(mine):
        for result in results:
            collected.setdefault(result.method, []).append(result)
    summaries = []
    for method, results in collected.items():
        names = list(dict.fromkeys(k for r in results for k in r.metrics))
        means = {}
        for name in names:
            values = [r.metrics[name] for r in results if name in r.metrics]
            finite = [v for v in values if np.isfinite(v)]
            means[name] = float(np.mean(finite)) if finite else float("nan")
        seconds = float(sum(r.params.get("explain_seconds", 0.0) for r in results))
        summaries.append(MethodSummary(method, len(results), means, seconds))
    return summaries


def plot_comparison(results: Sequence[Evaluation], path: Path) -> Path:
    """Deletion and insertion curves (mean over target rows) of each method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if path.suffix.lower() != ".png":
        raise WorkbenchError(f"plot writes a PNG; name the file *.png, not {path.name!r}")
    if not path.parent.exists():
        raise WorkbenchError(f"cannot write {str(path)!r}: folder does not exist")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for result in results:
        for ax, kind in zip(axes, ("deletion", "insertion")):
            fractions = result.curves[0][kind]["fractions"]
            values = np.mean([c[kind]["values"] for c in result.curves], axis=0)
            area = result.metrics[f"{kind}_auc"]
            style = ":" if result.method == RANDOM else "-"
            ax.plot(fractions, values, style, marker=".", label=f"{result.method} ({area:.3f})")
    scale = results[0].params.get("scale", "probability") if results else "probability"
    for ax, kind, hint in zip(axes, ("deletion", "insertion"), ("lower", "higher")):
        verb = "removed" if kind == "deletion" else "inserted"
        ax.set_title(f"{kind} curve (area: {hint} is better)")
        ax.set_xlabel(f"fraction of tokens {verb}, most important first")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"target {scale}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
