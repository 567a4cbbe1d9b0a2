"""Expert demonstrations in the agent's own words: the prompts `play` would show at each step
of a game's walkthrough, with the expert's command as the answer.

The walkthroughs are replayed by the batch runner itself (the `expert` agent in a real
environment), so every observation, inventory, list of valid commands and history line is
what the game said, rendered by the same `PromptTemplate` the llm agent uses (no tips).

    >>> from agents.finetune import demonstrations, write_demonstrations
    >>> demos = demonstrations(games.list_games("game-sets/l1"))      # doctest: +SKIP
    >>> write_demonstrations(demos, "adapters/l1/demonstrations.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.policies import Decision, ExpertAgent, LLMAgent, Turn
from agents.prompt import PromptTemplate
from agents.runner import play
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
                    game.id, game.level, len(turn.steps), self.prompt(turn), decision.action
                )
            )
        return decisions


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
        return [
            Demonstration(**json.loads(line))
            for line in file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (ValueError, TypeError) as exc:
        raise WorkbenchError(f"{str(file)!r} is not a demonstrations file: {exc}") from exc
