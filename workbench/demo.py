"""`workbench demo`: a short tour of the whole workbench on defaults.

Like `workbench/cli.py`, this module sits on top of every package (it calls explainers,
games and agents); nothing below imports it.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from workbench.store import Store

FRIDGE = "The milk is in the fridge. To get the milk, open the"


def run_demo(db: str | Path | None = None, console: Console | None = None) -> dict[str, str]:
    """Explain the default model's next word with integrated gradients, and store it.

    Returns the ids of what it recorded, for the closing message and for tests.
    """
    from explainers import explain
    from workbench.models import load_model

    console = console or Console()
    store = Store(db)
    console.rule("1. Load the default model (SmolLM2-135M-Instruct, from PyPI, cached)")
    lm = load_model()
    console.print(f"{lm.name}: {lm.kind} LM on {lm.device}, {lm.dtype}")
    console.rule("2. Integrated gradients: which words make ' fridge' likely?")
    exp = explain(lm, FRIDGE, target=" fridge", method="ig", steps="auto", baseline="eos")
    exp.show(console=console)
    exp_id = exp.save(store)
    console.print(f"saved explanation {exp_id} in {store.path}")
    return {"explanation": exp_id}
