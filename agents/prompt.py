"""The acting prompt: a plain-text template a user can read, copy and override.

Placeholders (Python `str.format` fields): {objective}, {tips}, {example}, {history},
{observation}, {inventory}, {commands}. Sections that are empty for a turn (no tips, no
worked example, no history yet) render as empty strings, so a template reads the same with
or without them.

    >>> from agents.prompt import PromptTemplate
    >>> print(PromptTemplate().text)                       # doctest: +SKIP
    >>> PromptTemplate.from_file("my_prompt.txt")          # doctest: +SKIP
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from games import BatchEnv, GameInfo
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from agents.trajectory import Turn

FIELDS = ("objective", "tips", "example", "history", "observation", "inventory", "commands")

DEFAULT_TEMPLATE = """\
You are playing a text adventure game. Reach the goal in as few commands as possible.

Goal: {objective}
{tips}{example}{history}
What you see now:
{observation}

{inventory}

Valid commands:
{commands}

Answer with exactly one valid command and nothing else."""


@dataclass(frozen=True)
class PromptTemplate:
    """The acting prompt's text and how many past steps it shows."""

    text: str = DEFAULT_TEMPLATE
    history_steps: int = 5
    max_observation_chars: int = 1500

    def __post_init__(self) -> None:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None}
        except ValueError as exc:
            raise WorkbenchError(f"prompt template is malformed: {exc}") from exc
        unknown = sorted(n for n in names if n not in FIELDS)
        if unknown:
            raise WorkbenchError(
                f"prompt template has unknown field(s) {', '.join(unknown)}; "
                f"known fields: {', '.join(FIELDS)} (write {{{{ and }}}} for literal braces)"
            )
        if self.history_steps < 0:
            raise WorkbenchError(f"history steps must be 0 or more, not {self.history_steps}")

    @classmethod
    def from_file(cls, path: str | Path, history_steps: int = 5) -> PromptTemplate:
        file = Path(path)
        if not file.is_file():
            raise WorkbenchError(f"prompt template {str(file)!r} does not exist")
        return cls(file.read_text(encoding="utf-8"), history_steps)

    def render(
        self,
        *,
        objective: str,
        observation: str,
        commands: list[str],
        inventory: str = "",
        tips: list[str] | tuple[str, ...] = (),
        history: list[tuple[str, str]] | None = None,
        example: str = "",
    ) -> str:
        """The prompt for one turn; `history` is (command, game reply) pairs, oldest first."""
        recent = (history or [])[-self.history_steps :] if self.history_steps else []
        return self.text.format(
            objective=objective.strip(),
            tips=("Tips:\n" + "\n".join(f"- {t}" for t in tips) + "\n\n") if tips else "",
            example=f"Example of a won game:\n{example.strip()}\n\n" if example else "",
            history=(
                "Your last commands and what happened:\n"
                + "\n".join(f"> {c}\n{_clip(r, 300)}" for c, r in recent)
                + "\n"
            )
            if recent
            else "",
            observation=_clip(observation, self.max_observation_chars),
            inventory=inventory.strip() or "You are carrying nothing.",
            commands="\n".join(commands),
        )


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def template_fields(turn: Turn, example: str = "") -> dict[str, Any]:
    """What a turn puts into the template (`PromptTemplate.render`'s keyword arguments): the
    one mapping from a turn to the fields, shared by the agent that plays and by explain-step,
    which must rebuild the agent's prompts character for character."""
    state = turn.state
    return {
        "objective": state.objective,
        "observation": state.observation,
        "inventory": state.inventory,
        "commands": sorted(state.admissible_commands),
        "tips": turn.spec.tips,
        "history": [(s.action, s.feedback) for s in turn.steps],
        "example": example,
    }


def worked_example(game: GameInfo, max_chars: int = 2500) -> str:
    """A won game as the prompt's worked example: its walkthrough with the real replies."""
    lines: list[str] = []
    with BatchEnv(1, workers=0) as env:
        state = env.reset({0: game.path})[0]
        lines.append(state.observation[-600:])
        for command in state.walkthrough:
            state = env.step({0: command})[0]
            lines.append(f"> {command}\n{state.observation}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[-max_chars:]
