"""Playing with tips: trials of each game under tip modes, with tips written between them.

Trial t+1 of a game plays with the tips a `TipWriter` wrote after trial t (self, expert,
reflexion); `general` plays every trial with a given tip set, and `none` without tips.

Under torchrun every rank plays its share of each trial's games with its own model replica
(`agents.runner.run_episodes`: rank 0 stores them chunk by chunk). Between trials rank 0
alone reads the stored trajectories, writes and stores the tips, and hands them to every
rank, so each rank prompts with the same tips as a one-process run would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from agents.policies import Agent, make_agent
from agents.runner import run_episodes, run_params
from agents.tips.tipset import TipSet
from agents.tips.writer import TipRequest, TipWriter
from agents.trajectory import Condition, Episode, EpisodeSpec
from games import GameInfo
from workbench import distributed
from workbench.errors import WorkbenchError
from workbench.llm import LLM
from workbench.store import Store, new_id, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store

TIP_MODES = ("none", "self", "expert", "reflexion", "general")
LEARNING_MODES = ("self", "expert", "reflexion")  # modes that write tips between trials


@dataclass
class TipPlayResult:
    """A play run whose conditions are tip modes, with the tip sets written between trials."""

    run_id: str | None
    run_name: str | None
    episodes: list[Episode]
    tipsets: list[TipSet]  # written by this call (reused ones from a resumed run excluded)
    failures: int  # tip sets recorded as failed
    skipped: int
    seconds: float = 0.0
    steps: int = 0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def check_modes(modes: Sequence[str], tipset: TipSet | None) -> list[str]:
    """The tip modes, each once, checked before anything is played."""
    modes = list(dict.fromkeys(modes))
    unknown = [m for m in modes if m not in TIP_MODES]
    if unknown or not modes:
        raise WorkbenchError(
            f"unknown tips mode {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(TIP_MODES)}"
        )
    if "general" in modes and tipset is None:
        raise WorkbenchError(
            "tips mode general plays with a general tip set: give its id as tipset "
            "(build one with `workbench tips merge` or `workbench experiment introspective-tips`)"
        )
    return modes


def play_tips(
    games: Sequence[GameInfo],
    modes: Sequence[str],
    *,
    llm: LLM,
    store: Store | None,
    writer: TipWriter | None = None,
    trials: int = 1,
    tipset: TipSet | None = None,
    parallel: int = 1,
    max_steps: int = 50,
    seed: int = 0,
    run_name: str | None = None,
    workers: int | str = "auto",
    write_after_last: bool = True,
    on_episode: Callable[[Episode], None] | None = None,
    on_tips: Callable[[TipSet], None] | None = None,
    agent: Agent | None = None,
    **agent_options: Any,
) -> TipPlayResult:
    """Play every game `trials` times under each tip mode (one condition per mode).

    With `tipset` the learning modes start from its tips. A run of the same name resumes:
    finished episodes and tip sets already written are reused, so it costs no LLM call twice.

    Args:
        games / trials / parallel / max_steps / seed / workers: as for `agents.play`.
        modes: any of none, self, expert, reflexion, general.
        llm: the acting LLM.
        store / run_name: where everything is recorded (tips need a store: provenance).
            Under torchrun rank 0's store and `tipset` count; the other ranks pass None.
        writer: writes the tips (its own LLM, prompts, caps and retries); by default a
            `TipWriter(llm)`.
        write_after_last: also write tips after the last trial (what a general set is
            merged from); False saves those LLM calls.
        on_episode / on_tips: progress hooks.
        agent_options: for the llm agent (select, template, score_mode, ...).

    >>> result = play_tips(games.list_games("game-sets/l1"), ["self"], llm=make_llm(),
    ...                    writer=TipWriter(make_llm(), max_tips=3), trials=3,
    ...                    store=Store(), run_name="self-l1")        # doctest: +SKIP
    """
    # Under torchrun rank 0 alone holds the store (the others pass None) and the tip set.
    tipset, has_store, run_name = distributed.broadcast(
        (tipset, store is not None, run_name or f"tips-{new_id()}")
    )
    modes = check_modes(modes, tipset)
    if not has_store:
        raise WorkbenchError("playing with tips needs a store (tips are recorded with provenance)")
    writer = writer or TipWriter(llm)
    player = agent or make_agent("llm", llm, **agent_options)
    params = run_params(
        games,
        player,
        trials=trials,
        conditions=[Condition(m) for m in modes],
        max_steps=max_steps,
        seed=seed,
        parallel=parallel,
        tips={"modes": modes, "tipset": tipset.id if tipset else None, **writer.describe()},
    )
    held: dict[tuple[str, str], TipSet | None] = {
        (m, g.id): tipset if m != "none" else None for m in modes for g in games
    }
    by_id = {g.id: g for g in games}
    learning = [m for m in modes if m in LEARNING_MODES]
    result = TipPlayResult(None, run_name, [], [], 0, 0)
    for trial in range(trials):
        specs = [
            EpisodeSpec(g, trial, m, list(held[(m, g.id)].texts) if held[(m, g.id)] else [])
            for m in modes
            for g in games
        ]
        played = run_episodes(
            specs,
            player,
            params=params,
            parallel=parallel,
            max_steps=max_steps,
            seed=seed,
            store=store,
            run_name=run_name,
            workers=workers,
            on_episode=on_episode,
            finish=False,
        )
        result.run_id = played.run_id or result.run_id
        result.episodes.extend(played.episodes)
        result.skipped += played.skipped
        result.seconds += played.seconds
        result.steps += played.steps
        if not learning or (trial == trials - 1 and not write_after_last):
            continue
        held, written = distributed.on_main(
            partial(_write_tips, store, writer, result.run_id, trial, learning, held, by_id)
        )
        for version in written:
            result.tipsets.append(version)
            result.failures += version.status == "failed"
            if on_tips is not None:
                on_tips(version)
    if result.run_id is not None:
        runs.finish_run(store, result.run_id)
    return result


def _write_tips(
    store: Store,
    writer: TipWriter,
    run_id: str | None,
    trial: int,
    learning: list[str],
    held: dict[tuple[str, str], TipSet | None],
    by_id: dict[str, GameInfo],
) -> tuple[dict[tuple[str, str], TipSet | None], list[TipSet]]:
    """Write and store the tips of the trial's episodes (rank 0's work): the tip sets held
    for the next trial, and the versions written now."""
    held = dict(held)
    requests = _requests(store, run_id, trial, learning, held, by_id)
    written: list[TipSet] = []
    for request, answer in zip(requests, writer.write(requests)):
        if answer is None:
            continue
        version, calls = answer
        version.save(store, calls)
        written.append(version)
        held[(request.mode, request.game.id)] = version
    return held, written


def _requests(
    store: Store,
    run_id: str | None,
    trial: int,
    learning: list[str],
    held: dict[tuple[str, str], TipSet | None],
    by_id: dict[str, GameInfo],
) -> list[TipRequest]:
    """The trial's episodes that still need tips written. Tip sets written before an
    interrupted run stopped are taken up into `held` instead of being written again."""
    requests: list[TipRequest] = []
    for row in play_store.list_episodes(store, run_id):
        if row["trial"] != trial or row["condition"] not in learning:
            continue
        key = (row["condition"], row["game"])
        found = tips_store.find_tipset(store, run_id, row["condition"], row["game"], trial)
        if found is not None:
            held[key] = TipSet.from_row(found)
            continue
        steps = play_store.get_steps(store, row["id"])
        requests.append(
            TipRequest(row["condition"], row, steps, by_id[row["game"]], held[key], run_id)
        )
    return requests
