"""`workbench patch`: activation patching, attribution patching and causal tracing."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from workbench.cli.modes import PATCH, refuse_unused, saving
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    ExplanationFormat,
    ExplanationFormatOption,
    ModelOption,
    open_results,
    writable_file,
)
from workbench.cli.render import emit_explanation, err_console, progress, status
from workbench.errors import WorkbenchError


class Component(str, Enum):
    resid = "resid"
    attn = "attn"
    mlp = "mlp"
    head = "head"


class Estimate(str, Enum):
    exact = "exact"
    attribution = "attribution"


class Direction(str, Enum):
    denoise = "denoise"
    noise = "noise"


def patch(
    ctx: typer.Context,
    clean: str = typer.Option(..., "--clean", help="The clean input."),
    corrupt: str | None = typer.Option(
        None, "--corrupt", help="The corrupted input (as many tokens as --clean)."
    ),
    noise_tokens: str | None = typer.Option(
        None,
        "--noise-tokens",
        help="Causal tracing instead of --corrupt: token positions to noise, e.g. 1,2,3.",
    ),
    samples: int | None = typer.Option(
        None, "--samples", min=1, help="Causal tracing: noise draws averaged (default 10)."
    ),
    window: int | None = typer.Option(
        None, "--window", min=1, help="Causal tracing: layers restored together (default 1)."
    ),
    noise: float | None = typer.Option(
        None, "--noise", min=0.0, help="Causal tracing: noise in embedding stds (default 3)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", min=0, help="Causal tracing: the noise's seed."
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Continuation (causal LM) or label (classifier); default: the model's top answer.",
    ),
    contrast: str | None = typer.Option(
        None, "--contrast", help="Score the logit difference target - contrast."
    ),
    component: Component = typer.Option(
        Component.resid, "--component", help="resid, attn, mlp or head."
    ),
    method: Estimate = typer.Option(
        Estimate.exact, "--method", help="exact (patch every cell) or attribution (estimate)."
    ),
    direction: Direction = typer.Option(
        Direction.denoise,
        "--direction",
        help="denoise (clean into corrupted) or noise (corrupted into clean).",
    ),
    layers: str = typer.Option("all", "--layers", help="all, or e.g. 0,4,8 or 2-6."),
    compare_exact: bool = typer.Option(
        False, "--compare-exact", help="With --method attribution: also patch exactly, correlate."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Patched runs per forward (default: a token budget)."
    ),
    fmt: ExplanationFormat = ExplanationFormatOption,
    out: Path | None = typer.Option(
        None, "--out", help="Write the html/json to this file; - to stdout."
    ),
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Save the result in the store."),
) -> None:
    """Which activations carry the answer? Patch them from one run into another.

    Each cell of the layer x position heatmap is the normalised restoration: 0 = the
    corrupted run's value, 1 = the clean run's.

    Example: workbench patch --clean "The key is under the mat. The key is under the"
    --corrupt "The key is under the rug. The key is under the" --target " mat"
    --contrast " rug"
    """
    tracing = noise_tokens is not None
    if tracing == (corrupt is not None):
        raise WorkbenchError("give either --corrupt TEXT or --noise-tokens i,j (causal tracing)")
    if tracing:
        mode = "tracing"
    elif method is Estimate.exact:
        mode = "exact"
    else:
        mode = "attribution-exact" if compare_exact else "attribution"
    refuse_unused(ctx, PATCH[mode, saving(save)])
    from explainers import get_method

    if tracing:
        name = "causal_tracing"
        params: dict[str, object] = {
            "noise_tokens": noise_tokens,
            **{"samples": samples, "window": window, "noise": noise, "seed": seed},
        }
        params = {k: v for k, v in params.items() if v is not None}
    else:
        name = "activation_patching" if method is Estimate.exact else "attribution_patching"
        params = {"corrupt": corrupt, "direction": direction.value}
        if compare_exact:
            params["compare_exact"] = True
    params.update(component=component.value, layers=layers)
    if batch_size is not None:
        params["batch_size"] = batch_size
    writable_file(out)
    # Everything that needs no model is checked before the model loads.
    explainer = get_method(name)
    explainer.check_request(clean, target, contrast=contrast)
    params = explainer.check_params(params)
    results = open_results(db, save)
    with err_console.status(f"loading {model or 'the default model'}"):
        from workbench.models import load_model

        lm = load_model(model, device=device, dtype=dtype, progress=True, adapter=adapter)
    with progress(f"{name} ({component.value})") as update:  # the method checked above runs
        exp = explainer.explain(
            lm, clean, target=target, contrast=contrast, progress=update, **params
        )
    if results.writes:
        exp.save(results.store)
    emit_explanation(exp, fmt, out)
    if results.writes and fmt is not ExplanationFormat.json:
        status(f"saved as explanation {exp.id} in {results.store.path}")
