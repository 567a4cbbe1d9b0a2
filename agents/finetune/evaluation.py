"""Imitation accuracy: how often the agent's choice is the expert's, step by step.

A win rate says that games are lost; this says which decision is not learned. Each
demonstration is scored as the llm agent with `--select choose` scores a turn (the valid
commands ranked by log-likelihood after the prompt), so a demonstration's prompt and valid
commands are all it needs. Grouped by level and by the expert command's verb, it shows, for
example, that an adapter takes the ingredient right but then prepares the meal where the
recipe still wants it fried.

    >>> tuned = LocalLLM(load_model(adapter="adapters/l1-3"))          # doctest: +SKIP
    >>> acc = imitation_accuracy(tuned, demos)                         # doctest: +SKIP
    >>> acc.accuracy, acc.by_decision()["level 2: cook"]               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agents.finetune.demonstrations import Demonstration
from workbench.errors import WorkbenchError
from workbench.llm import LLM, check_score_mode


@dataclass(frozen=True)
class Choice:
    """The agent's choice on one demonstration's prompt."""

    game: str
    level: int | None
    step: int
    expert: str
    chosen: str
    margin: float | None  # the expert command's score minus the best other command's (> 0: right)

    @property
    def right(self) -> bool:
        return self.chosen == self.expert

    @property
    def decision(self) -> str:
        """Level and the expert command's verb: "level 2: cook"."""
        return f"level {self.level if self.level is not None else '?'}: {self.expert.split()[0]}"


@dataclass
class ImitationAccuracy:
    choices: list[Choice]
    score_mode: str = "sum"

    @property
    def accuracy(self) -> float:
        return sum(c.right for c in self.choices) / len(self.choices) if self.choices else 0.0

    def by(self, key: Callable[[Choice], str]) -> dict[str, tuple[int, int]]:
        """(right, total) for each value of `key`, sorted by it."""
        groups: dict[str, list[Choice]] = {}
        for choice in self.choices:
            groups.setdefault(key(choice), []).append(choice)
        return {k: (sum(c.right for c in v), len(v)) for k, v in sorted(groups.items())}

    def by_decision(self) -> dict[str, tuple[int, int]]:
        return self.by(lambda c: c.decision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "right": sum(c.right for c in self.choices),
            "steps": len(self.choices),
            "score_mode": self.score_mode,
            "by_decision": {k: f"{r}/{n}" for k, (r, n) in self.by_decision().items()},
            "wrong": [asdict(c) for c in self.choices if not c.right],
        }


def imitation_accuracy(
    llm: LLM,
    demos: Sequence[Demonstration],
    *,
    score_mode: str = "sum",
    batch_size: int = 8,
) -> ImitationAccuracy:
    """Score every demonstration's valid commands after its prompt; the top one is the
    agent's choice (no repeat penalty: a demonstration has no commands that failed)."""
    check_score_mode(score_mode)
    if not llm.supports_scoring:
        raise WorkbenchError(f"the {llm.backend} backend cannot score commands")
    missing = [d for d in demos if not d.commands]
    if missing:
        raise WorkbenchError(
            f"demonstration {missing[0].game} step {missing[0].step} has no valid commands "
            "recorded (demonstrations written before they were); make them again"
        )
    choices = []
    for start in range(0, len(demos), batch_size):
        batch = demos[start : start + batch_size]
        scored = llm.score(
            [d.prompt for d in batch],
            [list(d.commands) for d in batch],
            calibrate=score_mode == "calibrated",
        )
        for demo, scores in zip(batch, scored):
            values = dict(zip(demo.commands, scores.ranked(score_mode)))
            chosen = max(demo.commands, key=values.__getitem__)
            others = [v for c, v in values.items() if c != demo.command]
            # An expert command that is not valid there can never be chosen: no margin.
            margin = (
                round(values[demo.command] - max(others), 4)
                if demo.command in values and others
                else None
            )
            choices.append(Choice(demo.game, demo.level, demo.step, demo.command, chosen, margin))
    return ImitationAccuracy(choices, score_mode)
