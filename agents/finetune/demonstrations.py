"""Expert demonstrations in the agent's own words: the prompts `play` would show at each step
of a game's walkthrough, with the expert's command as the answer.

The walkthroughs are replayed by the batch runner itself (the `expert` agent in a real
environment), so every observation, inventory, list of valid commands and history line is
what the game said, rendered by the same `PromptTemplate` the llm agent uses (no tips).

A learner that only saw the walkthrough never saw a state off it, and an imitation agent's
typical mistake is to skip a step ("prepare meal" before the ingredient is cooked) and then
repeat itself, since nothing it was trained on follows a mistake. So `recoveries` adds
episodes that leave the walkthrough once, with a wrong command, and then follow TextWorld's
winning policy from wherever that led: the prompts after the detour, labelled with what an
expert does from there (in the spirit of DAgger, Ross et al. 2011, without the learner in
the loop).

    >>> from agents.finetune import demonstrations, write_demonstrations
    >>> demos = demonstrations(games.list_games("game-sets/l1"))      # doctest: +SKIP
    >>> demos += recovery_demonstrations(games.list_games("game-sets/l1"))  # doctest: +SKIP
    >>> write_demonstrations(demos, "adapters/l1/demonstrations.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.policies import Decision, ExpertAgent, LLMAgent, candidates
from agents.prompt import PromptTemplate
from agents.runner import play
from agents.trajectory import Turn
from games import GameInfo
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class Demonstration:
    """One training example: the acting prompt at a step and the expert's command."""

    game: str  # game id
    level: int | None
    step: int
    prompt: str
    command: str
    detour: str = ""  # the wrong command this episode took first ("": the walkthrough)
    commands: tuple[str, ...] = ()  # the valid commands the agent would have chosen from

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _PromptingExpert(ExpertAgent):
    """The expert, writing down the prompt the llm agent would have seen at each turn."""

    # The llm agent's own rendering (template, history, tips, example), not a copy of it.
    prompt = LLMAgent.prompt

    def __init__(self, template: PromptTemplate) -> None:
        self.template = template
        self.example = ""
        self.seen: list[Demonstration] = []

    def act(self, turns: list[Turn]) -> list[Decision]:
        decisions = super().act(turns)
        for turn, decision in zip(turns, decisions):
            game = turn.spec.game
            self.seen.append(
                Demonstration(
                    game.id,
                    game.level,
                    len(turn.steps),
                    self.prompt(turn),
                    decision.action,
                    commands=tuple(candidates(turn.state)),
                )
            )
        return decisions


class _RecoveringExpert(_PromptingExpert):
    """Follows the walkthrough to a random step at or after its first quest command, takes
    one wrong command there, then follows the game's winning policy; writes down the
    prompts after the detour. Half the detours are a later walkthrough command taken too
    early (a skipped step), half any other valid command; the episode's own seeded `rng`
    picks both, so the same seed gives the same detours."""

    def __init__(self, template: PromptTemplate) -> None:
        super().__init__(template)
        self.detour_step: dict[tuple[str, int], int] = {}
        self.detour: dict[tuple[str, int], str] = {}
        self.trials: list[int] = []  # the trial of each demonstration in `seen`

    def act(self, turns: list[Turn]) -> list[Decision]:
        decisions = []
        for turn in turns:
            game, step = turn.spec.game, len(turn.steps)
            key = (game.id, turn.spec.trial)
            at = self.detour_step.setdefault(key, _detour_step(turn))
            if step < at:
                action = turn.state.walkthrough[step]
            elif step == at:
                action = self.detour[key] = _wrong_command(turn)
            elif turn.state.policy_commands:
                action = turn.state.policy_commands[0]
                self.seen.append(
                    Demonstration(
                        game.id,
                        game.level,
                        step,
                        self.prompt(turn),
                        action,
                        self.detour[key],
                        tuple(candidates(turn.state)),
                    )
                )
                self.trials.append(turn.spec.trial)
            else:  # no policy: the detour lost the game
                action = "look"
            decisions.append(Decision(action))
        return decisions


def _detour_step(turn: Turn) -> int:
    """The step of an episode's detour: at or after the walkthrough's first quest command
    (the first command of the winning policy). Earlier detours (before the recipe is read,
    say) would teach the policy's knowledge of the recipe, which no player has."""
    walk, policy = turn.state.walkthrough, turn.state.policy_commands
    first = walk.index(policy[0]) if policy and policy[0] in walk else 0
    return turn.rng.randrange(first, max(first + 1, len(walk) - 1))


def _wrong_command(turn: Turn) -> str:
    """A valid command other than the walkthrough's that changes the game (not "look",
    "inventory" or "examine ...", which teach nothing about recovering): a later
    walkthrough command where one is valid now (two times in three), else any other."""
    walk, step = turn.state.walkthrough, len(turn.steps)
    right = walk[step] if step < len(walk) else ""
    valid = sorted(
        c
        for c in turn.state.admissible_commands
        if c != right and c.split(" ", 1)[0] not in _READ_ONLY
    )
    early = [c for c in valid if c in walk[step + 1 :]]
    pool = early if early and turn.rng.random() < 2 / 3 else valid
    return turn.rng.choice(pool) if pool else right or "look"


_READ_ONLY = {"look", "inventory", "examine"}


def recovery_demonstrations(
    games: Sequence[GameInfo],
    template: PromptTemplate | None = None,
    *,
    per_game: int = 2,
    seed: int = 0,
    parallel: int = 8,
    workers: int | str = "auto",
) -> list[Demonstration]:
    """`per_game` detour episodes a game (see the module's docstring): the prompts after a
    wrong command, each labelled with the winning policy's next command. Episodes whose
    detour loses the game add nothing. Same seed, same demonstrations."""
    if not games:
        raise WorkbenchError("no games to take demonstrations from")
    if per_game < 1:
        return []
    expert = _RecoveringExpert(template or PromptTemplate())
    # The walkthrough's length again for the recovery, and spare steps; 200 where a game's
    # walkthrough length is not recorded (as for the walkthroughs themselves).
    known = all(g.walkthrough_steps for g in games)
    budget = 2 * max(g.walkthrough_steps for g in games) + 10 if known else 200
    play(
        games,
        expert,
        trials=per_game,
        parallel=min(parallel, len(games) * per_game),
        max_steps=budget,
        seed=seed,
        workers=workers,
    )
    order = {g.id: i for i, g in enumerate(games)}
    found = sorted(
        zip(expert.trials, expert.seen), key=lambda td: (order[td[1].game], td[0], td[1].step)
    )
    return [demo for _, demo in found]


def demonstrations(
    games: Sequence[GameInfo],
    template: PromptTemplate | None = None,
    *,
    parallel: int = 8,
    workers: int | str = "auto",
) -> list[Demonstration]:
    """Every step of every game's walkthrough as a `Demonstration`, game by game in the
    order given, steps in order. A walkthrough that does not win its game is an error (the
    expert must win every game)."""
    if not games:
        raise WorkbenchError("no games to take demonstrations from")
    expert = _PromptingExpert(template or PromptTemplate())
    # The expert plays "look" once its walkthrough is spent; a few spare steps show it.
    budget = (
        max(g.walkthrough_steps for g in games) + 5
        if all(g.walkthrough_steps for g in games)
        else 200
    )
    result = play(
        games, expert, parallel=min(parallel, len(games)), max_steps=budget, workers=workers
    )
    lost = [e.spec.game.id for e in result.episodes if not e.won]
    if lost:
        raise WorkbenchError(
            f"the walkthrough of game {lost[0]} does not win it ({len(lost)} such game(s)); "
            "these games cannot be used as demonstrations"
        )
    order = {g.id: i for i, g in enumerate(games)}
    return sorted(expert.seen, key=lambda d: (order[d.game], d.step))


def write_demonstrations(demos: Sequence[Demonstration], path: str | os.PathLike) -> Path:
    """The demonstrations as JSONL, one example a line (readable with pandas or `jq`)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for demo in demos:
            fh.write(json.dumps(demo.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, file)
    return file


def read_demonstrations(path: str | os.PathLike) -> list[Demonstration]:
    file = Path(path)
    if not file.is_file():
        raise WorkbenchError(f"demonstrations file {str(file)!r} does not exist")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        return [Demonstration(**{**r, "commands": tuple(r.get("commands", ()))}) for r in rows]
    except (ValueError, TypeError) as exc:
        raise WorkbenchError(f"{str(file)!r} is not a demonstrations file: {exc}") from exc
