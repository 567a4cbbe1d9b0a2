"""`workbench play`: agents play game sets; every episode, step and LLM call is stored."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli.interrupt import Interrupted
from workbench.cli.modes import PLAY, backend, refuse_unused
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    LlmOption,
    MaxTipsOption,
    ModelOption,
    SelectOption,
    open_store,
)
from workbench.cli.render import progress, status
from workbench.errors import WorkbenchError


def play(
    ctx: typer.Context,
    games_paths: list[Path] = typer.Option(
        ..., "--games", "-g", help="Game-set folder or game file (repeatable)."
    ),
    agent: str = typer.Option("llm", "--agent", help="llm, random or expert."),
    llm: str = LlmOption,
    select: str = SelectOption,
    score_mode: str = typer.Option(
        "sum", "--score-mode", help="choose: sum, mean or calibrated log-probabilities."
    ),
    trials: int = typer.Option(1, "--trials", min=1, help="Episodes per game and condition."),
    parallel: int = typer.Option(
        8, "--parallel", min=1, help="Games stepping (and prompted) together."
    ),
    max_steps: int = typer.Option(50, "--max-steps", min=1, help="Commands per episode at most."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds random choices (and sampling)."),
    run_name: str | None = typer.Option(
        None, "--run-name", help="Name the run; an unfinished run of this name is resumed."
    ),
    conditions: list[str] = typer.Option(
        [], "--condition", help="NAME or NAME=TIPS_FILE (one tip a line); repeatable."
    ),
    prompt: Path | None = typer.Option(
        None,
        "--prompt",
        exists=True,
        dir_okay=False,
        help="Acting-prompt template file (see agents.prompt).",
    ),
    history: int = typer.Option(5, "--history", min=0, help="Past steps shown in the prompt."),
    example: Path | None = typer.Option(
        None,
        "--example",
        exists=True,
        help="A game file whose walkthrough is the prompt's worked example.",
    ),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="generate: 0 is greedy."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="openai: requests in flight."),
    timeout: float = typer.Option(
        60.0, "--timeout", min=0.001, help="openai: seconds per request."
    ),
    retries: int = typer.Option(4, "--retries", min=0, help="openai: retries per call (backoff)."),
    workers: str = typer.Option("auto", "--workers", help="Game processes: auto or a number."),
    tips: str | None = typer.Option(
        None, "--tips", help="none, self, expert, reflexion or general (Introspective Tips)."
    ),
    tipset: str | None = typer.Option(
        None, "--tipset", help="Tip set id: the general set, or the tips learning starts from."
    ),
    max_tips: int = MaxTipsOption,
    tip_prompts: Path | None = typer.Option(
        None,
        "--tip-prompts",
        exists=True,
        file_okay=False,
        help="Folder of self/expert/reflexion/merge.txt tip prompts.",
    ),
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    gpus: int | None = GpusOption,
) -> None:
    """Play games with an agent and record every episode, step and LLM call.

    With --tips, trial t+1 of a game plays with the tips the LLM wrote after trial t
    (self, expert, reflexion), or every trial with a general set (--tips general --tipset ID).

    With --gpus N (or under torchrun) the games split over the GPUs, one model replica a
    GPU; with --tips rank 0 writes the tips between trials and every rank plays with them.

    Example: workbench play --games game-sets/l3 --agent llm --trials 3 --parallel 8
    --run-name l3-llm
    """
    import games as game_sets
    from workbench.cli import launch
    from workbench.store import new_id

    refuse_unused(ctx, PLAY[_mode(agent, llm, select, workers)])
    # --gpus N: this command again under torchrun, then exit
    launch.start(gpus, device, local_model=agent == "llm" and backend(llm) == "local")
    _check_tips(tips, tipset, tip_prompts, agent, conditions)
    found = [g for p in games_paths for g in game_sets.list_games(p)]
    conds = [_parse_condition(c) for c in conditions] or None
    template = _template(prompt, history)
    store = open_store(db)
    tip_options = _tip_options(tips, tipset, max_tips, tip_prompts, store)
    language_model, options = None, {}
    if agent == "llm":
        llm_options = {"concurrency": concurrency, "timeout": timeout, "max_retries": retries}
        language_model = _language_model(llm, model, adapter, device, dtype, llm_options)
        options = {
            "select": select,
            "score_mode": score_mode,
            "template": template,
            "temperature": temperature,
            "example": _worked_example(example),
        }
    common = {
        "llm": language_model,
        "trials": trials,
        "parallel": parallel,
        "max_steps": max_steps,
        "seed": seed,
        "store": store,
        "workers": workers if workers == "auto" else int(workers),
        **options,
    }
    result = _run(found, agent, conds, tips, tip_options, common, run_name or f"play-{new_id()}")
    won = sum(e.won for e in result.episodes)
    status(
        f"run {result.run_name}: played {len(result.episodes)} episode(s), won {won}"
        f" ({result.skipped} done before); {result.steps_per_second:.1f} steps/s."
        f" See: workbench report --run {result.run_name}" + (f" --db {db}" if db else "")
    )


def _mode(agent: str, llm: str, select: str, workers: str) -> tuple[str, ...]:
    """The PLAY mode the options select, once they are known to be valid."""
    import agents

    if agent not in agents.AGENTS:
        raise WorkbenchError(f"unknown agent {agent!r}; choose one of {', '.join(agents.AGENTS)}")
    if workers != "auto" and not workers.isdigit():
        raise WorkbenchError(f"--workers takes auto or a number, not {workers!r}")
    if agent != "llm":
        return (agent,)
    if select not in agents.SELECTIONS:
        raise WorkbenchError(f"unknown --select {select!r}; choose one of choose, generate")
    return ("llm", backend(llm), select)


def _template(prompt: Path | None, history: int):
    """The acting prompt: `--prompt FILE`, else the built-in one."""
    from agents import PromptTemplate

    if prompt is not None:
        return PromptTemplate.from_file(prompt, history)
    return PromptTemplate(history_steps=history)


def _worked_example(example: Path | None) -> str:
    """`--example GAME`: that game's walkthrough as the prompt's worked example."""
    if example is None:
        return ""
    import games as game_sets
    from agents import worked_example

    return worked_example(game_sets.list_games(example)[0])


def _language_model(llm: str, model, adapter, device: str, dtype: str, endpoint_options: dict):
    """The LLM the agent asks: local weights, or an endpoint with its request options."""
    from workbench.llm import make_llm

    if backend(llm) == "openai":
        return make_llm(llm, model=model, **endpoint_options)
    return make_llm(llm, model=model, device=device, dtype=dtype, adapter=adapter, progress=True)


def _run(found, agent: str, conds, tips: str | None, tip_options, common: dict, run_name: str):
    """Play, with a progress bar; an unreachable endpoint or Ctrl-C says how to resume."""
    import agents
    from workbench.llm import LLMUnavailableError

    counts = {"played": 0, "already": 0, "won": 0, "total": None}
    with progress(run_name) as update:

        def started(to_play: int, already: int) -> None:
            counts.update(already=already, total=to_play + already)
            update(0, to_play)
            if already:
                status(f"resuming {run_name}: {already} episode(s) already done")

        def finished(episode) -> None:
            counts["played"] += 1
            counts["won"] += episode.won
            update(counts["played"], description=f"{run_name} (won {counts['won']})")

        common = {**common, "run_name": run_name, "on_episode": finished}
        try:
            if tip_options is not None:
                from agents.tips import TipWriter, play_tips

                writer = TipWriter(common["llm"], **tip_options["writer"])
                return play_tips(
                    found, [tips], tipset=tip_options["tipset"], writer=writer, **common
                )
            return agents.play(found, agent, conditions=conds, on_start=started, **common)
        except LLMUnavailableError as exc:
            raise WorkbenchError(
                f"{exc}; finished episodes are saved, resume with --run-name {run_name}"
            ) from exc
        except KeyboardInterrupt as exc:
            saved = counts["already"] + counts["played"]
            of = "" if counts["total"] is None else f" of {counts['total']}"
            raise Interrupted(
                f"interrupted: {saved}{of} episodes saved; run the same command to resume"
            ) from exc


def _parse_condition(text: str):
    """`NAME` or `NAME=TIPS_FILE` (one tip a line) as an agents.Condition."""
    from agents import Condition

    name, sep, file = text.partition("=")
    if not name:
        raise WorkbenchError(f"--condition takes NAME or NAME=TIPS_FILE, not {text!r}")
    if not sep:
        return Condition(name)
    tips_file = Path(file)
    if not tips_file.is_file():
        raise WorkbenchError(f"tips file {file!r} of condition {name!r} does not exist")
    tips = tuple(t.strip() for t in tips_file.read_text(encoding="utf-8").splitlines() if t.strip())
    return Condition(name, tips)


def _check_tips(
    tips: str | None,
    tipset: str | None,
    tip_prompts: Path | None,
    agent: str,
    conditions: list[str],
) -> None:
    """`play --tips ...` checked before the store opens and any model loads."""
    from agents.tips import TIP_MODES

    if tips is None:
        if tipset is not None or tip_prompts is not None:
            raise WorkbenchError("--tipset and --tip-prompts go with --tips MODE")
        return
    if tips not in TIP_MODES:
        raise WorkbenchError(f"unknown --tips {tips!r}; choose one of {', '.join(TIP_MODES)}")
    if conditions:
        raise WorkbenchError("--tips names the condition itself; leave out --condition")
    if agent != "llm":
        raise WorkbenchError(f"--tips needs the llm agent (the {agent} agent reads no tips)")
    if tips == "general" and tipset is None:
        raise WorkbenchError(
            "--tips general plays with a general tip set: give --tipset ID (see `workbench "
            "tips list`; build one with `workbench tips merge` or `workbench experiment`)"
        )


def _tip_options(
    tips: str | None, tipset: str | None, max_tips: int, tip_prompts: Path | None, store
) -> dict[str, object] | None:
    """The tip set to start from (read from the run's store) and the tip writer's settings;
    None when playing without tips."""
    if tips is None:
        return None
    from agents.tips import DEFAULT_TIP_PROMPTS, TipPrompts, TipSet

    return {
        # Ranks other than 0 have no store: they receive the tips from rank 0.
        "tipset": TipSet.load(store, tipset) if tipset and store is not None else None,
        "writer": {
            "max_tips": max_tips,
            "prompts": TipPrompts.from_dir(tip_prompts) if tip_prompts else DEFAULT_TIP_PROMPTS,
        },
    }
