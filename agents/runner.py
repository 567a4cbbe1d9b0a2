"""The batch runner: games x trials x conditions, many games stepping together.

Every slot of the batched environment plays one episode at a time and takes the next
pending episode as soon as its own ends. A finished episode is written to the store in one
transaction with all its steps and LLM calls; re-running with the same `run_name` skips the
episodes already written, so a run killed at any point resumes without losing or
duplicating anything. Random choices are seeded per episode (run seed, game, trial,
condition), so a resumed run makes the same choices as an uninterrupted one.

    >>> import agents, games
    >>> result = agents.play(games.list_games("game-sets/l1"), agent="random", trials=2,
    ...                      parallel=8, store=Store(), run_name="random-l1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.mistakes import EpisodeJudge
from agents.policies import Agent, Decision, make_agent
from agents.trajectory import Condition, Episode, EpisodeSpec, Step, Turn
from games import BatchEnv, GameInfo, GameState
from workbench import distributed
from workbench.errors import WorkbenchError
from workbench.llm import LLM
from workbench.store import Store, new_id, runs
from workbench.store import play as play_store

# Run parameters that decide which episodes exist and how they are played: a resumed run
# must agree on them, or its episodes would not be comparable.
_RESUME_KEYS = (
    "games",
    "trials",
    "conditions",
    "max_steps",
    "seed",
    "agent",
    "llm",
    "select",
    "score_mode",
)


@dataclass
class PlayResult:
    run_id: str | None
    run_name: str | None
    episodes: list[Episode]  # played by this call
    skipped: int  # already in the store from an earlier, interrupted call
    status: str  # finished or stopped
    seconds: float = 0.0
    steps: int = 0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


@dataclass
class _Active:
    spec: EpisodeSpec
    state: GameState
    rng: random.Random
    started: float
    steps: list[Step] = field(default_factory=list)
    no_effect: set[str] = field(default_factory=set)
    judge: EpisodeJudge = field(init=False)  # the steps against the winning plan

    def __post_init__(self) -> None:
        self.judge = EpisodeJudge(self.state)


def episode_specs(
    games: Sequence[GameInfo], trials: int = 1, conditions: Sequence[Condition] | None = None
) -> list[EpisodeSpec]:
    """Games x trials x conditions, trial-major so early results span every game."""
    conds = list(conditions or [Condition()])
    return [
        EpisodeSpec(g, t, c.name, list(c.tips)) for t in range(trials) for c in conds for g in games
    ]


def run_params(
    games: Sequence[GameInfo],
    agent: Agent,
    *,
    trials: int,
    conditions: Sequence[Condition],
    max_steps: int,
    seed: int,
    parallel: int,
    **extra: Any,
) -> dict[str, Any]:
    """The parameters a play run is recorded with, checked: its games, trials and
    conditions, how episodes are played, and the agent. A resumed run must agree on the
    ones that decide which episodes exist and how they are played. Settings of a feature
    built on play (tips) come as `extra`.
    """
    if not games:
        raise WorkbenchError("no games to play")
    if trials < 1:
        raise WorkbenchError(f"trials must be at least 1, not {trials}")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise WorkbenchError(f"condition names must be distinct, got {', '.join(names)}")
    if max_steps < 1:
        raise WorkbenchError(f"max_steps must be at least 1, not {max_steps}")
    if parallel < 1:
        raise WorkbenchError(f"parallel must be at least 1, not {parallel}")
    return {
        "games": sorted({g.id for g in games}),
        "game_paths": {g.id: str(g.path) for g in games},
        "trials": trials,
        "conditions": [{"name": c.name, "tips": list(c.tips)} for c in conditions],
        "max_steps": max_steps,
        "seed": seed,
        "parallel": parallel,
        **extra,
        **agent.describe(),
    }


def play(
    games: Sequence[GameInfo],
    agent: str | Agent = "random",
    *,
    llm: LLM | None = None,
    trials: int = 1,
    conditions: Sequence[Condition] | None = None,
    parallel: int = 1,
    max_steps: int = 50,
    seed: int = 0,
    store: Store | None = None,
    run_name: str | None = None,
    workers: int | str = "auto",
    on_episode: Callable[[Episode], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    **agent_options: Any,
) -> PlayResult:
    """Play every game `trials` times under every condition and record it.

    Args:
        games: from `games.list_games`.
        agent: "random", "expert", "llm", or an `Agent`.
        llm: the LLM of the llm agent (`workbench.llm.make_llm`).
        trials / conditions: episodes per game and condition; conditions carry tips.
        parallel: games stepping together (and prompts batched together).
        max_steps: an episode stops after this many commands.
        seed: seeds the random choices of every episode.
        store / run_name: where to record; an unfinished run of that name is resumed.
        workers: processes stepping the games ("auto", or 0 for in-process).
        on_episode / on_start: progress hooks (on_start gets (to play, already done)).
        agent_options: for the llm agent (select, template, score_mode, example, ...).
    """
    player = agent if isinstance(agent, Agent) else make_agent(agent, llm, **agent_options)
    conds = list(conditions or [Condition()])
    params = run_params(
        games,
        player,
        trials=trials,
        conditions=conds,
        max_steps=max_steps,
        seed=seed,
        parallel=parallel,
    )
    specs = episode_specs(games, trials, conds)
    return run_episodes(
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
        on_start=on_start,
    )


def run_episodes(
    specs: Sequence[EpisodeSpec],
    agent: Agent,
    *,
    params: dict[str, Any],
    parallel: int = 1,
    max_steps: int = 50,
    seed: int = 0,
    store: Store | None = None,
    run_name: str | None = None,
    workers: int | str = "auto",
    on_episode: Callable[[Episode], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    finish: bool = True,
) -> PlayResult:
    """Play the given episode specs (the lower-level entry point for features that build
    their own specs, such as tips written between trials).

    `finish=False` leaves the run open, so that a caller playing trial by trial (tips are
    written between trials) can add the next trial's episodes to the same run."""
    # Under torchrun rank 0 alone opens the store; every rank learns what is done from it.
    run = _open_run(store, run_name, params) if distributed.is_main() else None
    done_keys = play_store.finished_episode_keys(store, run["id"]) if store and run else set()
    done_keys = set(distributed.broadcast(sorted(done_keys)))
    pending = [s for s in specs if s.key not in done_keys]
    skipped = len(specs) - len(pending)
    if store is not None and run is not None:
        # Recorded before the first episode, with its plan, so the run shows as running.
        runs.start_play_run(store, run, len(done_keys) + len(pending))
    if on_start is not None:
        on_start(len(pending), skipped)
    played: list[Episode] = []
    started = time.perf_counter()

    def record(episode: Episode) -> None:
        if store is not None and run is not None:
            _save(store, run, episode)
        played.append(episode)
        if on_episode is not None:
            on_episode(episode)

    options = {"parallel": parallel, "max_steps": max_steps, "seed": seed, "workers": workers}
    try:
        if distributed.world().size == 1:
            n_steps = _play_specs(pending, agent, record, **options)
        else:
            # Each rank plays its block of every chunk of episodes (4 x parallel a rank, or
            # $WORKBENCH_CHUNK_SIZE) with its own model replica (its own GPU); rank 0
            # records the chunk's episodes, so a stopped run keeps whole chunks.
            def play_block(block: list[EpisodeSpec]) -> list[Episode]:
                episodes: list[Episode] = []
                _play_specs(block, agent, episodes.append, **options)
                order = {spec.key: i for i, spec in enumerate(block)}
                return sorted(episodes, key=lambda e: order[e.spec.key])

            chunk = distributed.run_chunks(
                pending,
                play_block,
                save=lambda episodes: [record(e) for e in episodes],
                chunk_size=int(os.environ.get(distributed.CHUNK_ENV) or 4 * parallel),
            )
            n_steps = sum(len(e.steps) for e in chunk)
    except BaseException as exc:
        if store is not None and run is not None:
            _stop_run(store, run["id"], exc)
        raise
    seconds = time.perf_counter() - started
    if store is not None and run is not None and finish:
        if runs.get_run(store, run["id"], kind="play") is not None:
            runs.finish_run(store, run["id"])
    return PlayResult(
        run["id"] if run else None,
        run["name"] if run else None,
        played,
        skipped,
        "finished",
        seconds,
        n_steps,
    )


def _play_specs(
    specs: Sequence[EpisodeSpec],
    agent: Agent,
    finished: Callable[[Episode], None],
    *,
    parallel: int,
    max_steps: int,
    seed: int,
    workers: int | str,
) -> int:
    """Play `specs` in one batched environment; `finished` sees each episode as it ends.
    Returns the number of steps taken."""
    pending = deque(specs)
    n_steps = 0
    if not pending:
        return 0
    with BatchEnv(min(parallel, len(pending)), workers=workers) as env:
        active: dict[int, _Active] = {}
        while pending or active:
            free = [s for s in range(env.parallel) if s not in active]
            starting = {s: pending.popleft() for s in free[: len(pending)]}
            if starting:
                states = env.reset({s: spec.game.path for s, spec in starting.items()})
                for s, spec in starting.items():
                    rng = random.Random(f"{seed}:{spec.game.id}:{spec.trial}:{spec.condition}")
                    active[s] = _Active(spec, states[s], rng, time.perf_counter())
            slots = sorted(active)
            turns = [
                Turn(
                    active[s].spec,
                    active[s].state,
                    active[s].steps,
                    active[s].rng,
                    active[s].no_effect,
                )
                for s in slots
            ]
            decisions = agent.act(turns)
            after = env.step({s: d.action for s, d in zip(slots, decisions)})
            n_steps += len(slots)
            for s, decision in zip(slots, decisions):
                episode = _advance(active[s], decision, after[s], max_steps, agent.name)
                if episode is not None:
                    del active[s]
                    finished(episode)
    return n_steps


def _advance(
    active: _Active, decision: Decision, state: GameState, max_steps: int, agent: str
) -> Episode | None:
    """Record one step; return the finished episode when the game or the budget is over."""
    before = active.state
    changed = state.facts != before.facts or state.score != before.score
    if not changed:
        active.no_effect.add(decision.action)
    active.steps.append(
        Step(
            idx=len(active.steps),
            observation=before.observation,
            admissible=sorted(before.admissible_commands),
            facts=before.facts,
            action=decision.action,
            valid=decision.valid,
            reward=state.score - before.score,
            score=state.score,
            feedback=state.observation,
            done=state.done,
            changed=changed,
            raw_output=decision.raw_output,
            llm_call=decision.llm_call,
        )
    )
    active.judge.add(decision.action, state)
    active.state = state
    if state.won or state.lost or state.done:
        reason = "won" if state.won else "lost"
    elif len(active.steps) >= max_steps:
        reason = "max_steps"
    else:
        return None
    for step, verdict in zip(active.steps, active.judge.verdicts()):
        step.verdict = verdict
    return Episode(
        id=new_id(),
        spec=active.spec,
        agent=agent,
        steps=active.steps,
        won=state.won,
        lost=state.lost,
        score=state.score,
        max_score=state.max_score,
        stop_reason=reason,
        seconds=time.perf_counter() - active.started,
    )


def _open_run(
    store: Store | None, run_name: str | None, params: dict[str, Any]
) -> dict[str, Any] | None:
    """The run to write into: a new one, or the unfinished run of that name (resumed)."""
    if store is None:
        if run_name:
            raise WorkbenchError("run_name needs a store to record the run in")
        return None
    run_id = new_id()
    name = run_name or f"play-{run_id}"
    existing = runs.get_run(store, name, kind="play") if run_name else None
    if existing is None:
        if run_name and runs.get_run(store, run_name) is not None:
            raise WorkbenchError(f"run name {run_name!r} is taken by a run that is not a play run")
        return {"id": run_id, "name": name, "params": params}
    if existing["status"] == "finished":
        raise WorkbenchError(
            f"run {name!r} has already finished; pick another run_name "
            "or see its report (`workbench report`)"
        )
    old = existing["params"] or {}
    for key in _RESUME_KEYS:
        if old.get(key) != params.get(key):
            raise WorkbenchError(
                f"run {name!r} was started with a different {key.replace('_', ' ')}; "
                "resume it with the options it was started with"
            )
    return {"id": existing["id"], "name": name, "params": old}


def _stop_run(store: Store, run_id: str, exc: BaseException) -> None:
    """A run that stops early: removed if it recorded nothing (bad input leaves no trace),
    else marked interrupted or failed (resumable either way). A store error is not hidden
    behind another one."""
    try:
        if not runs.discard_empty_run(store, run_id):
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            runs.finish_run(store, run_id, status)
    except WorkbenchError:
        pass


def _save(store: Store, run: dict[str, Any], episode: Episode) -> None:
    game = episode.spec.game
    play_store.save_episode(
        store,
        run,
        game.to_dict(),
        episode.to_row(),
        [s.to_row() for s in episode.steps],
        [c.to_row() for c in episode.llm_calls],
        [s.verdict.to_row(s.idx) for s in episode.steps if s.verdict is not None],
    )
