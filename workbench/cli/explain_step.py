"""`workbench explain-step`: why did the agent take this recorded action?"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from workbench.cli.options import (
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
from workbench.cli.render import show_step_explanation, status, write_json


def explain_step(
    run: str = typer.Option(..., "--run", help="Play run name or id."),
    episode: str = typer.Option(
        ..., "--episode", help="Episode id (see `workbench episodes list --run NAME`)."
    ),
    step: int = typer.Option(..., "--step", min=0, help="Step number, from 0."),
    method: str = typer.Option("ig", "--method", help="Attribution method (ig, occlusion, ...)."),
    param: list[str] = ParamOption,
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Why did the agent take this action? Attribution per prompt segment and per tip.

    Each tip is also removed in turn, to see whether the action changes without it.

    Example: workbench explain-step --run l1-self --episode 3f2a9c1b7d10 --step 2 --method ig
    """
    from agents.explain_step import explain_step as run_explain_step
    from explainers import get_method
    from workbench.models import load_model

    params = method_params(get_method(method), {}, param)
    store = open_store(db)
    lm = load_model(model, device=device, dtype=dtype, progress=True) if model else None
    result = run_explain_step(store, run, episode, step, method=method, lm=lm, **params)
    if fmt is TableFormat.json:
        write_json(result.to_dict())
        return
    show_step_explanation(result, Console())
    status(f"saved as explanation {result.explanation_id} in {store.path}")
