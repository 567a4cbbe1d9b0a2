"""Episodes and tip lists as the tip prompts show them to the LLM."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agents.tips.tipset import Tip


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\n{2,}", "\n", (text or "").strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_trajectory(
    episode: dict[str, Any], steps: list[dict[str, Any]], max_chars: int = 3000
) -> str:
    """An episode (as `workbench.store.play` returns it) as the tip prompts show it: the
    start, each command with the game's reply, and the outcome. Long episodes keep their
    start and their last steps."""
    # The first observation opens with an ASCII-art banner; the story starts after it.
    start = steps[0]["observation"] if steps else ""
    start = _clip(start[-600:], 600)
    moves = [f"> {s['action']}\n{_clip(s['feedback'], 200)}" for s in steps]
    if episode["won"]:
        outcome = f"You won in {episode['moves']} commands"
    elif episode["lost"]:
        outcome = f"You lost after {episode['moves']} commands"
    else:
        outcome = f"You did not win within {episode['moves']} commands"
    outcome += f", scoring {episode['score']} of {episode['max_score']} points."
    budget = max_chars - len(start) - len(outcome)
    shown: list[str] = []
    for move in reversed(moves):
        if sum(len(m) + 1 for m in shown) + len(move) > budget and shown:
            break
        shown.insert(0, move)
    left_out = len(moves) - len(shown)
    middle = [f"... ({left_out} earlier commands left out)"] if left_out else []
    return "\n".join([start, *middle, *shown, outcome])


def held_tips(tips: Sequence[str], label: str) -> str:
    """The tips (or reflections) an episode was played with, as a bulleted block."""
    if not tips:
        return f"You had no {label} yet.\n"
    return f"The {label} you had:\n" + "\n".join(f"- {t}" for t in tips) + "\n"


def numbered_tips(tips: Sequence[Tip]) -> str:
    """A general list as the merge prompt numbers it (the numbers merge operations name)."""
    if not tips:
        return "(empty)"
    return "\n".join(f"{i}. {t.text} (score {t.score})" for i, t in enumerate(tips, 1))
