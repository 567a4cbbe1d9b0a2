"""What an episode is made of: the spec it was played from, its steps and LLM calls, and
the turn an agent faces before each step."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.mistakes import StepVerdict
from games import GameInfo, GameState


@dataclass(frozen=True)
class Condition:
    """A named experimental condition; its tips go into every prompt of its episodes."""

    name: str = "default"
    tips: tuple[str, ...] = ()


@dataclass
class EpisodeSpec:
    """One episode to play. A tips feature builds these itself (tips per episode)."""

    game: GameInfo
    trial: int
    condition: str = "default"
    tips: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.game.id, self.trial, self.condition)


@dataclass
class LLMCall:
    """One call to an LLM as recorded in `llm_calls` (full prompt and completion)."""

    id: str
    purpose: str
    backend: str
    model: str
    prompt: str
    completion: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    step_idx: int | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Step:
    idx: int
    observation: str  # what the agent saw before acting
    admissible: list[str]
    facts: list[str]  # TextWorld's ground truth before acting (for probes)
    action: str
    valid: bool
    reward: int
    score: int
    feedback: str  # the game's reply
    done: bool
    changed: bool  # whether the action changed the game state at all
    raw_output: str | None = None
    llm_call: LLMCall | None = None
    verdict: StepVerdict | None = None  # against TextWorld's winning plan, once it ended

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row.pop("llm_call")
        row.pop("changed")
        row.pop("verdict")
        row["llm_call_id"] = self.llm_call.id if self.llm_call else None
        return row


@dataclass
class Episode:
    id: str
    spec: EpisodeSpec
    agent: str
    steps: list[Step]
    won: bool
    lost: bool
    score: int
    max_score: int
    stop_reason: str  # won, lost or max_steps
    seconds: float

    @property
    def moves(self) -> int:
        return len(self.steps)

    @property
    def normalized_score(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0

    @property
    def llm_calls(self) -> list[LLMCall]:
        return [s.llm_call for s in self.steps if s.llm_call is not None]

    def to_row(self) -> dict[str, Any]:
        calls = self.llm_calls
        return {
            "id": self.id,
            "game": self.spec.game.id,
            "level": self.spec.game.level,
            "trial": self.spec.trial,
            "condition": self.spec.condition,
            "agent": self.agent,
            "tips": list(self.spec.tips),
            "won": self.won,
            "lost": self.lost,
            "score": self.score,
            "max_score": self.max_score,
            "moves": self.moves,
            "stop_reason": self.stop_reason,
            "invalid_actions": sum(not s.valid for s in self.steps),
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "seconds": self.seconds,
        }


@dataclass
class Turn:
    """Everything an agent may look at to pick one game's next command."""

    spec: EpisodeSpec
    state: GameState
    steps: list[Step]
    rng: random.Random
    # Commands that were tried and changed nothing; repeating them wastes a move.
    no_effect: set[str] = field(default_factory=set)
