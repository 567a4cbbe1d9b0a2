"""`workbench explain-step`: why did the agent take this recorded action?"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from workbench.cli.modes import EXPLAIN_STEP, refuse_unused
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    ParamOption,
    TableFormat,
    TableFormatOption,
    method_params,
    open_store,
)
from workbench.cli.render import (
    print_plain,
    progress,
    show_step_explanation,
    status,
    write_json,
)
from workbench.errors import WorkbenchError


def explain_step(
    ctx: typer.Context,
    run: str = typer.Option(..., "--run", help="Play run name or id."),
    episode: str = typer.Option(
        ..., "--episode", help="Episode id (see `workbench episodes list --run NAME`)."
    ),
    step: int = typer.Option(..., "--step", min=0, help="Step number, from 0."),
    method: str = typer.Option(
        "auto",
        "--method",
        help="auto (segment_shapley on a CPU: exact Shapley values of the prompt's segments "
        "and tips; ig on a GPU: a token-level heatmap), or any attribution method.",
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="What is explained: choice (log p of the chosen command among the candidates, "
        "the default for runs that ranked commands), margin (over the runner-up) or "
        "logprob (the command's text; the default for runs that generated commands).",
    ),
    param: list[str] = ParamOption,
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    patch: str | None = typer.Option(
        None,
        "--patch",
        help="OLD=>NEW: edit what the game told the agent (observation, history replies), "
        "choose again, and patch the residual stream layer by layer instead of attributing "
        "(--method is not used).",
    ),
    positions: str = typer.Option(
        "changed", "--positions", help="With --patch: changed (edited + last), last or all."
    ),
    layers: str = typer.Option("all", "--layers", help="With --patch: all, or e.g. 0,10,20."),
) -> None:
    """Why did the agent take this action? Attribution per prompt segment and per tip.

    Each tip is also removed in turn, to see whether the action changes without it. With
    --patch, what the game said (observation, history) is edited instead, and activation
    patching shows where the information that decided the action sits.

    Example: workbench explain-step --run l1-self --episode 3f2a9c1b7d10 --step 2

    Example: workbench explain-step --run l1-self --episode 3f2a9c1b7d10 --step 2 --method ig
    --objective margin

    Example: workbench explain-step --run l1-self --episode 3f2a9c1b7d10 --step 2
    --patch "the fridge is open=>the fridge is closed"
    """
    refuse_unused(ctx, EXPLAIN_STEP["attribution" if patch is None else "patch"])
    if patch is not None:
        _patch_step(
            run, episode, step, patch, positions, layers, fmt, model, adapter, device, dtype, db
        )
        return
    from agents.explain_step import check_objective, resolve_method
    from agents.explain_step import explain_step as run_explain_step
    from explainers import get_method

    check_objective(objective)
    resolved = resolve_method(method, device)
    params = method_params(get_method(resolved), {}, param)
    store = open_store(db)
    lm = _model(store, run, model, adapter, device, dtype)
    with progress(f"explaining step {step} ({resolved})") as update:
        result = run_explain_step(
            store,
            run,
            episode,
            step,
            method=resolved,
            lm=lm,
            progress=update,
            objective=objective,
            **params,
        )
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    show_step_explanation(result, Console())
    status(f"saved as explanation {result.explanation_id} in {store.path}")


def _patch_step(
    run, episode, step, patch, positions, layers, fmt, model, adapter, device, dtype, db
):
    from agents.step_patching import POSITION_MODES, parse_patch, patch_step
    from explainers.params import parse_int_list

    parse_patch(patch)  # a malformed request fails before the model loads
    if positions not in POSITION_MODES:
        raise WorkbenchError(f"--positions must be {', '.join(POSITION_MODES)}, not {positions!r}")
    layer_list = parse_int_list("--layers", layers)
    store = open_store(db)
    lm = _model(store, run, model, adapter, device, dtype)
    with progress(f"patching step {step}") as update:
        result = patch_step(
            store,
            run,
            episode,
            step,
            patch,
            lm=lm,
            positions=positions,
            layers=layer_list,
            progress=update,
        )
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    out = Console()
    then = (
        f"changes to {result.corrupt_action!r}"
        if result.action_changed
        else f"stays {result.corrupt_action!r}"
    )
    print_plain(
        out,
        f"step {step} of episode {episode}: action {result.action!r}; with {patch!r} the "
        f"agent's choice {then}",
    )
    result.explanation.show(console=out)
    status(f"saved as explanation {result.explanation_id} in {store.path}")


def _model(store, run, model, adapter, device, dtype):
    """The model named on the command line, else the one the run played with (its base and
    adapter, as recorded), on --device in --dtype."""
    from agents.recorded_step import run_model
    from workbench.models import load_model

    if model is None and adapter is None:
        return run_model(store, run, device=device, dtype=dtype, progress=True)
    return load_model(model, device=device, dtype=dtype, progress=True, adapter=adapter)
