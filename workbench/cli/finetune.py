"""`workbench finetune`: a LoRA adapter trained on the expert trajectories of game sets."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli.options import DeviceOption, DtypeOption, ModelOption, new_folder
from workbench.cli.render import progress, status, write_json
from workbench.errors import WorkbenchError


def finetune(
    games_paths: list[Path] = typer.Option(
        ..., "--games", "-g", help="Game-set folder or game file (repeatable)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the adapter."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Passes over the training steps."),
    lr: float = typer.Option(5e-4, "--lr", min=0.0, help="Peak learning rate (AdamW)."),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank."),
    dropout: float = typer.Option(
        0.0, "--dropout", min=0.0, max=0.99, help="LoRA dropout, in [0, 1)."
    ),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Steps per optimizer step."),
    top_layers: int | None = typer.Option(
        None, "--top-layers", min=1, help="Adapt only the last N blocks (faster; default all)."
    ),
    recoveries: int = typer.Option(
        1,
        "--recoveries",
        min=0,
        help="Detour episodes a game: states after a wrong command, labelled with the "
        "winning policy's next command (0: the walkthroughs alone).",
    ),
    heldout_fraction: float = typer.Option(
        0.1,
        "--heldout-fraction",
        min=0.0,
        max=0.99,
        help="Share of the games held out for the held-out loss.",
    ),
    rename_ingredients: bool = typer.Option(
        True,
        "--rename-ingredients/--keep-ingredients",
        help="Each epoch, rename the recipe's foods to other training games' foods, so the "
        "cookbook, not a food's name, says what to do.",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 autocast on GPUs and CPUs with native bf16), float32 or bfloat16.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Fixes the held-out games, order and init."),
    history: int = typer.Option(5, "--history", min=0, help="Past steps shown in the prompt."),
    parallel: int = typer.Option(8, "--parallel", min=1, help="Games replayed together."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Fine-tune the agent's model on expert trajectories (LoRA, peft).

    Each game's walkthrough is replayed; each step's prompt, rendered exactly as `play`
    renders it (no tips), is a training example with the expert's command as the answer.
    --recoveries N adds N detours a game: a wrong command, then the prompts along
    TextWorld's winning policy from there, so the agent learns to recover from mistakes.
    The adapter, its demonstrations (JSONL) and a manifest (finetune.json) go to --out;
    play with it: `workbench play --adapter OUT ...`.

    Example: workbench finetune --games game-sets/l1-3 --out adapters/l1-3 --lr 2e-3 --top-layers 10
    """
    import games as game_sets
    from agents import PromptTemplate
    from agents.finetune import FinetuneSettings, check_out
    from agents.finetune import finetune as run_finetune
    from workbench.models import load_model

    settings = FinetuneSettings(
        epochs=epochs,
        lr=lr,
        rank=rank,
        dropout=dropout,
        batch_size=batch_size,
        heldout_fraction=heldout_fraction,
        seed=seed,
        top_layers=top_layers,
        recoveries=recoveries,
        rename_ingredients=rename_ingredients,
        precision=precision,
    )
    template = PromptTemplate(history_steps=history)
    check_out(new_folder(out))
    found = [g for p in games_paths for g in game_sets.list_games(p)]
    if not found:
        raise WorkbenchError("no games to fine-tune on")
    lm = load_model(model, device=device, dtype=dtype, progress=True)
    with progress(f"fine-tuning {lm.name}") as update:
        result = run_finetune(
            lm,
            found,
            out,
            settings,
            template=template,
            parallel=parallel,
            progress=update,
            on_phase=status,
        )
    if json_out:
        write_json(result.manifest)
        return
    loss = result.manifest["loss"]
    held = (
        f"held-out loss {loss['heldout_before']:.3f} -> {loss['heldout']:.3f}"
        if loss["heldout"] is not None
        else "no held-out games"
    )
    status(
        f"adapter in {out}: train loss {loss['train']:.3f}, {held}"
        f" ({result.manifest['seconds']:.0f} s). Play with it: "
        f"workbench play --games DIR --adapter {out}"
    )
