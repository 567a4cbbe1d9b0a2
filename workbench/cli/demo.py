"""`workbench demo`: a short tour of the whole workbench on defaults.

It calls explainers, games and agents, so it lives with the CLI at the top of the layers.
On a 2-core CPU it finishes in a few minutes: the games are small (level 1), episodes
short, and the step explanation uses few IG steps.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from workbench.cli.options import DbOption
from workbench.cli.render import report_table, show_step_explanation

FRIDGE = "The milk is in the fridge. To get the milk, open the"


def demo(db: Path | None = DbOption) -> None:
    """Run a short tour of the workbench on defaults and record it in the store.

    Example: workbench demo --db demo.duckdb
    """
    from workbench.settings import db_path

    ids = run_demo(db)
    Console().print(
        f"\nDone. Open the dashboard on what the demo recorded:\n"
        f"  workbench dashboard --db {db_path(db)}\n"
        f"(run {ids['run']}, episode {ids['episode']}; or in the terminal:"
        f" workbench explanations show {ids['step_explanation']}"
        + (f" --db {db}" if db else "")
        + ")",
        markup=False,
        highlight=False,
    )


def run_demo(
    db: str | Path | None = None,
    console: Console | None = None,
    *,
    games_count: int = 2,
    trials: int = 2,
    max_steps: int = 4,
    ig_steps: int = 8,
) -> dict[str, str]:
    """The tour: explain a next word, play games, write tips, play again with them, report,
    and explain one of the agent's decisions. Everything is recorded in the store; the
    games go to the cache (`WORKBENCH_CACHE`), not the current folder.

    Returns the ids of what it recorded, for the closing message and for tests.
    """
    import games
    from agents import PromptTemplate, report
    from agents.explain_step import explain_step
    from agents.tips import TipWriter, play_tips
    from explainers import explain
    from workbench.llm.local import LocalLLM
    from workbench.models import load_model
    from workbench.settings import cache_dir
    from workbench.store import Store, new_id
    from workbench.store import play as play_store

    console = console or Console()
    started = time.perf_counter()
    store = Store(db)
    console.rule("1. Load the default model (SmolLM2-135M-Instruct, from PyPI, cached)")
    lm = load_model()
    console.print(f"{lm.name}: {lm.kind} LM on {lm.device}, {lm.dtype}")
    console.rule("2. Integrated gradients: which words make ' fridge' likely?")
    exp = explain(lm, FRIDGE, target=" fridge", method="ig", steps="auto", baseline="eos")
    exp.show(console=console)
    exp_id = exp.save(store)
    console.print(f"saved explanation {exp_id} in {store.path}")

    console.rule(f"3. Make {games_count} level-1 cooking games (TextWorld)")
    folder = cache_dir() / "demo-games"
    made = games.make(level=1, count=games_count, seed=0, split="train", out=folder)
    found = made.added + made.existing
    console.print(f"{len(found)} games in {folder}")

    run_name = f"demo-self-{new_id()}"
    console.rule(f"4. Play them {trials} times; after each trial the LLM writes tips (self)")
    llm = LocalLLM(lm)
    result = play_tips(
        found,
        ["self"],
        llm=llm,
        store=store,
        trials=trials,
        max_steps=max_steps,
        parallel=len(found),
        run_name=run_name,
        workers=0,
        write_after_last=False,
        writer=TipWriter(llm, max_tokens=80),
        template=PromptTemplate(history_steps=2),
    )
    for tipset in result.tipsets:
        console.print(
            f"tips for game {tipset.game_id} after trial {tipset.trial} ({tipset.status}):",
            markup=False,
        )
        for tip in tipset.texts or ["(none usable; the previous tips stay)"]:
            console.print(f"  - {tip}", markup=False, highlight=False)

    console.rule("5. Report: success and normalised score per condition, 95% CIs over games")
    console.print(report_table(report(store, run_name).rows))

    console.rule("6. Explain a decision: how much of it came from the tips?")
    episodes = play_store.list_episodes(store, result.run_id)
    tipped = [e for e in episodes if e["tips"]] or episodes
    chosen = tipped[0]
    step = explain_step(store, run_name, chosen["id"], 0, method="ig", lm=lm, steps=ig_steps)
    show_step_explanation(step, console)
    console.print(f"\nThe tour took {time.perf_counter() - started:.0f} s.")
    return {
        "explanation": exp_id,
        "run": run_name,
        "episode": chosen["id"],
        "step_explanation": step.explanation_id,
    }
