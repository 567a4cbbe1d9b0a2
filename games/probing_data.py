"""Probing datasets of game state: does an LLM's hidden state know what TextWorld knows?

Each game is played once by its walkthrough (states with progress: items carried, the
fridge opened) and `random_episodes` times leaving the walkthrough at a random step for
uniformly random admissible commands (states off the winning path). At every step we keep
the text an agent would read (objective, the last few steps, the observation, the
admissible commands) and TextWorld's facts, and ask one yes/no question per entity of the game:

- `carried`: is object X in the inventory? (fact `in(X, I)`)
- `room`: is the player in room R? (fact `at(P, R)`)
- `open`: is container or door C open? (fact `open(C)`)

The question is appended as a command the agent could type, `> examine X`, so the probe
reads the residual at the entity's last token; the text itself never states the answer
(the admissible commands may imply it, as they do for the agent). Records come out shaped
like the probing JSONL lines: text, label ("yes"/"no"), position (-1), group (the game's
id, for a split by game) and type (game id and entity: the control-task label is random
per entity per game).

    >>> from games.probing_data import state_records                       # doctest: +SKIP
    >>> records = state_records("game-sets/l3", "carried", max_games=4)
    >>> records[0]["label"], records[0]["type"]
    ('no', '3f2a9c1b7d10:knife')
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from games.catalog import list_games
from games.env import BatchEnv, GameState
from workbench.errors import WorkbenchError

TASK_PREFIX = "textworld-state"
FACT = re.compile(r"^(\w+)\((.*)\)$")
# Commands that end the episode or take the player out of the state being probed.
ENDING_COMMANDS = ("eat", "quit", "restart")


@dataclass(frozen=True)
class Fact:
    name: str
    args: tuple[str, ...]


def parse_fact(text: str) -> Fact:
    match = FACT.match(text.strip())
    if match is None:
        return Fact(text.strip(), ())
    args = tuple(a.strip() for a in match.group(2).split(",")) if match.group(2) else ()
    return Fact(match.group(1), args)


def carried_entities(facts: list[Fact]) -> set[str]:
    # Portable things are whatever sits in or on something (or in the inventory); fixed
    # furniture is only ever `at` a room. The recipe's placeholders are no objects.
    return {
        f.args[0]
        for f in facts
        if f.name in ("in", "on")
        and len(f.args) == 2
        and f.args[1] != "RECIPE"
        and not f.args[0].startswith("ingredient_")
    }


def room_entities(facts: list[Fact]) -> set[str]:
    rooms = {f.args[1] for f in facts if f.name == "at" and f.args[:1] == ("P",)}
    for f in facts:
        if f.name in ("north_of", "south_of", "east_of", "west_of") and len(f.args) == 2:
            rooms.update(f.args)
    return rooms


def open_entities(facts: list[Fact]) -> set[str]:
    return {f.args[0] for f in facts if f.name in ("open", "closed", "locked") and f.args}


def is_carried(facts: set[Fact], entity: str) -> bool:
    return Fact("in", (entity, "I")) in facts


def is_in_room(facts: set[Fact], entity: str) -> bool:
    return Fact("at", ("P", entity)) in facts


def is_open(facts: set[Fact], entity: str) -> bool:
    return Fact("open", (entity,)) in facts


@dataclass(frozen=True)
class StateTask:
    """One built-in question about game state: which entities, and the truth for each."""

    name: str
    entities: Callable[[list[Fact]], set[str]]
    holds: Callable[[set[Fact], str], bool]
    question: str


TASKS: dict[str, StateTask] = {
    "carried": StateTask("carried", carried_entities, is_carried, "object X is carried"),
    "room": StateTask("room", room_entities, is_in_room, "the player is in room R"),
    "open": StateTask("open", open_entities, is_open, "container or door C is open"),
}


def concept_holds(concept: str) -> Callable[[Sequence[str]], bool]:
    """A concept over a state's facts (TextWorld's strings, e.g. "in(knife, I)"): a fact
    pattern with `*` wildcards ("sliced(*carrot*)", "roasted(ingredient_*)" for a recipe
    that asks to roast), alternatives joined by "|", or the shortcut "carried:X" for
    "in(X, I)". Matching ignores case and the spaces after commas."""
    text = concept.strip()
    if not text:
        raise WorkbenchError("the concept is empty; give a fact pattern such as in(knife, I)")
    patterns = []
    for part in text.split("|"):
        part = part.strip()
        if part.startswith("carried:"):
            part = f"in({part.split(':', 1)[1].strip()}, I)"
        if not FACT.match(part):
            raise WorkbenchError(
                f"concept {part!r} is not a fact pattern: write name(args), e.g. in(knife, I), "
                "sliced(*carrot*), roasted(ingredient_*), or carried:knife"
            )
        patterns.append(_normal(part))

    def holds(facts: Sequence[str]) -> bool:
        return any(fnmatchcase(_normal(f), p) for f in facts for p in patterns)

    return holds


def _normal(fact: str) -> str:
    return re.sub(r",\s*", ",", fact.strip().lower())


def task_names() -> list[str]:
    return [f"{TASK_PREFIX}:{name}" for name in TASKS]


def parse_task(task: str) -> StateTask:
    """`textworld-state:carried` -> the task, or a one-line error listing the known ones."""
    prefix, _, name = task.partition(":")
    if prefix != TASK_PREFIX or name not in TASKS:
        raise WorkbenchError(
            f"unknown probing task {task!r}; built-in tasks: {', '.join(task_names())} "
            "(or give a JSONL data set of your own)"
        )
    return TASKS[name]


@dataclass
class Step:
    """What the agent read at one step, and what was true then."""

    game_id: str
    prompt: str
    facts: list[Fact]


def agent_view(
    objective: str, history: list[tuple[str, str]], state: GameState, commands: bool = True
) -> str:
    """The text an acting agent reads: objective, last steps, observation, commands."""
    parts = [f"Objective: {objective.strip()}"]
    if history:
        past = "\n".join(f"> {cmd}\n{obs.strip()}" for cmd, obs in history)
        parts.append(f"Previous steps:\n{past}")
    parts.append(f"Observation:\n{state.observation.strip()}")
    if commands and state.admissible_commands:
        parts.append("Admissible commands: " + ", ".join(state.admissible_commands))
    return "\n\n".join(parts)


def play_steps(
    game_path: Path,
    game_id: str,
    rng: random.Random,
    random_episodes: int = 1,
    max_steps: int = 10,
    history: int = 2,
    commands: bool = True,
) -> list[Step]:
    """The walkthrough episode, then `random_episodes` that leave the walkthrough at a random
    step for up to `max_steps` random admissible commands."""
    steps: list[Step] = []
    with BatchEnv(parallel=1, workers=0) as env:
        for episode in range(1 + random_episodes):
            state = env.reset({0: game_path})[0]
            walkthrough = list(state.walkthrough)
            objective = state.objective
            past: list[tuple[str, str]] = []
            # Random episodes first follow the walkthrough for a random number of steps, so
            # that off-path states also carry progress (items taken, containers opened).
            expert = len(walkthrough) if episode == 0 else rng.randrange(len(walkthrough) or 1)
            limit = expert if episode == 0 else expert + max_steps
            for index in range(limit + 1):
                view = agent_view(objective, past[-history:] if history else [], state, commands)
                steps.append(Step(game_id, view, [parse_fact(f) for f in state.facts]))
                if state.done or index == limit:
                    break
                if index < expert:
                    command = walkthrough[index]
                else:
                    options = [
                        c
                        for c in state.admissible_commands
                        if c.split(" ", 1)[0] not in ENDING_COMMANDS
                    ] or state.admissible_commands
                    if not options:
                        break
                    command = rng.choice(options)
                state = env.step({0: command})[0]
                past.append((command, state.observation))
    return steps


def state_records(
    games: str | Path,
    task: str,
    *,
    max_games: int | None = None,
    random_episodes: int = 1,
    max_steps: int = 10,
    history: int = 2,
    commands: bool = True,
    varying_only: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Probing records for `task` ("carried", "room", "open", with or without the
    `textworld-state:` prefix) from the games in `games` (a game-set folder or one file).

    Args:
        games: a folder of compiled games (with or without a manifest) or one game file.
        task: which state question to ask.
        max_games: use only the first N games.
        random_episodes: random-play episodes per game, besides the walkthrough.
        max_steps: steps per random episode.
        history: how many previous steps the agent's text shows.
        commands: include the admissible commands in the agent's text.
        varying_only: ask only about entities whose answer changes during the game.
        seed: fixes the random play.
    """
    state_task = parse_task(task if ":" in task else f"{TASK_PREFIX}:{task}")
    infos = list_games(games)
    if max_games is not None:
        if max_games < 1:
            raise WorkbenchError(f"max games must be at least 1, not {max_games}")
        infos = infos[:max_games]
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for info in infos:
        steps = play_steps(info.path, info.id, rng, random_episodes, max_steps, history, commands)
        # The entity set is fixed per game (every entity seen in any step), so that a "no"
        # is asked about things that exist, e.g. the knife before and after it is taken.
        entities = sorted(set().union(*(state_task.entities(s.facts) for s in steps)))
        truth = [[state_task.holds(set(s.facts), e) for e in entities] for s in steps]
        if varying_only:
            # An entity whose answer never changes in a game (a room never visited) can be
            # answered from its name alone; keeping only those that change balances the
            # labels and asks about state tracking.
            keep = [k for k in range(len(entities)) if len({row[k] for row in truth}) == 2]
        else:
            keep = list(range(len(entities)))
        for step, row in zip(steps, truth):
            for k in keep:
                entity = entities[k]
                records.append(
                    {
                        "text": f"{step.prompt}\n\n> examine {entity}",
                        "label": "yes" if row[k] else "no",
                        "position": -1,
                        "group": info.id,
                        # The control type is the entity *in this game*: entity names
                        # recur across games, and a type seen in training lets a probe
                        # memorise its random control label (control accuracy 1.0 on the
                        # default model), whereas the state of the knife in an unseen game
                        # cannot be looked up; with the split by game the control then
                        # measures what a probe gets without reading the game's state.
                        "type": f"{info.id}:{entity}",
                    }
                )
    if not records:
        raise WorkbenchError(f"the games in {str(games)!r} gave no {state_task.name} questions")
    return records
