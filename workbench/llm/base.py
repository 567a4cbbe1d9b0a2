"""The interface every LLM backend offers: batched completion and candidate scoring.

Agents, tip writers and prompt-based explainers call `LLM.complete` and `LLM.score` and
never see which backend answers. Failures of single calls come back as a `Completion`
with `error` set (the caller decides whether to go on); failures no retry can fix, such
as an unreachable endpoint, raise `LLMUnavailableError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from workbench.errors import WorkbenchError

ScoreMode = Literal["sum", "mean", "calibrated"]
SCORE_MODES: tuple[str, ...] = ("sum", "mean", "calibrated")


def check_score_mode(mode: str) -> None:
    """One line for an unknown way of turning token log-likelihoods into a command's score."""
    if mode not in SCORE_MODES:
        raise WorkbenchError(f"unknown score mode {mode!r}; choose one of {', '.join(SCORE_MODES)}")


class LLMUnavailableError(WorkbenchError):
    """The backend could not answer even after retries (endpoint down, garbage replies)."""


@dataclass
class Completion:
    """One prompt's answer, with what it cost."""

    prompt: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CandidateScores:
    """Log-likelihoods of candidate continuations of one prompt.

    `logprobs[i]` is the summed log p(candidates[i] | prompt); `n_tokens[i]` its length in
    tokens, so callers can compute means; `calibrated[i]` (when asked for) subtracts the
    candidate's log-probability after a neutral prompt, which removes the bias towards
    short or generic commands that plain sums and means have.
    """

    prompt: str
    candidates: list[str]
    logprobs: list[float]
    n_tokens: list[int]
    prompt_tokens: int
    latency_s: float
    calibrated: list[float] | None = None

    def ranked(self, mode: ScoreMode = "sum") -> list[float]:
        if mode == "sum":
            return list(self.logprobs)
        if mode == "mean":
            return [lp / max(n, 1) for lp, n in zip(self.logprobs, self.n_tokens)]
        if self.calibrated is None:
            raise ValueError("scores were computed without calibration")
        return list(self.calibrated)


class LLM(ABC):
    """A language model behind `complete` (generation) and `score` (likelihoods)."""

    backend: str = ""
    model: str = ""
    supports_scoring: bool = True

    def complete(
        self,
        prompts: list[str],
        *,
        max_tokens: int = 32,
        temperature: float = 0.0,
        system: str | None = None,
    ) -> list[Completion]:
        """Answer every prompt (a user message), all in one batch where the backend can:
        greedy at temperature 0, sampled above it; `system` is the system message."""
        return self._complete(list(prompts), max_tokens, temperature, system)

    @abstractmethod
    def _complete(
        self, prompts: list[str], max_tokens: int, temperature: float, system: str | None
    ) -> list[Completion]:
        """What `complete` does on this backend (its arguments stated once, there)."""

    @abstractmethod
    def score(
        self, prompts: list[str], candidates: list[list[str]], *, calibrate: bool = False
    ) -> list[CandidateScores]:
        """Log-likelihood of each prompt's candidates as the assistant's reply."""

    def describe(self) -> dict[str, Any]:
        """What identifies this LLM in a run's parameters (never a secret)."""
        return {"backend": self.backend, "model": self.model}

    @property
    def model_info(self) -> dict[str, Any] | None:
        """The weights that answer (`workbench.models.ModelIdentity.to_dict()`), where they
        are known: a local model's; None behind an endpoint."""
        return None
