"""Agents: how a command is chosen for each game of a batch.

- `random`: uniform over the admissible commands (a floor for every report).
- `expert`: follows the game's walkthrough; it must win every game, which checks the runner.
- `llm`: prompts an LLM with the acting prompt and either ranks the admissible commands by
  log-likelihood (`select="choose"`) or maps its generated text to one (`"generate"`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.prompt import PromptTemplate, template_fields
from agents.trajectory import LLMCall, Turn
from games import GameState
from workbench.errors import WorkbenchError
from workbench.llm import LLM, CandidateScores, LLMUnavailableError, check_score_mode
from workbench.store import new_id

AGENTS = ("random", "expert", "llm")
SELECTIONS = ("choose", "generate")


@dataclass
class Decision:
    action: str
    valid: bool = True
    raw_output: str | None = None
    llm_call: LLMCall | None = None


@dataclass
class Ranking:
    """A turn's candidates, the scores the agent ranks them by, and the LLM's raw scores."""

    candidates: list[str]
    scores: list[float]
    raw: CandidateScores

    @property
    def best(self) -> int:
        return max(range(len(self.candidates)), key=lambda i: self.scores[i])


class Agent:
    name = ""

    def act(self, turns: list[Turn]) -> list[Decision]:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {"agent": self.name}


class RandomAgent(Agent):
    name = "random"

    def act(self, turns: list[Turn]) -> list[Decision]:
        return [
            Decision(t.rng.choice(sorted(t.state.admissible_commands) or ["look"])) for t in turns
        ]


class ExpertAgent(Agent):
    """Replays the walkthrough TextWorld computed for the game's initial state."""

    name = "expert"

    def act(self, turns: list[Turn]) -> list[Decision]:
        out = []
        for t in turns:
            walk = t.state.walkthrough
            i = len(t.steps)
            out.append(Decision(walk[i] if i < len(walk) else "look"))
        return out


class LLMAgent(Agent):
    """An LLM choosing commands; all turns of a batch go to the LLM in one call.

    Args:
        llm: any backend (`workbench.llm.make_llm`).
        select: "choose" ranks the admissible commands; "generate" maps free text to one.
        template: the acting prompt.
        score_mode: "sum" (summed log-probability), "mean" (per token; favours long
            predictable commands), or "calibrated" (sum minus the command's log-probability
            after a neutral prompt).
        repeat_penalty: subtracted (in nats) from commands that already changed nothing.
        example: a worked example for the prompt (see `agents.prompt.worked_example`).
        max_tokens / temperature: for generation.
    """

    name = "llm"

    def __init__(
        self,
        llm: LLM,
        select: str = "choose",
        template: PromptTemplate | None = None,
        score_mode: str = "sum",
        repeat_penalty: float = 3.0,
        example: str = "",
        max_tokens: int = 16,
        temperature: float = 0.0,
    ):
        if select not in SELECTIONS:
            raise WorkbenchError(f"unknown select {select!r}; choose one of choose, generate")
        check_score_mode(score_mode)
        if select == "choose" and not llm.supports_scoring:
            raise WorkbenchError(f"the {llm.backend} backend cannot score; use select='generate'")
        self.llm = llm
        self.select = select
        self.template = template or PromptTemplate()
        self.score_mode = score_mode
        self.repeat_penalty = repeat_penalty
        self.example = example
        self.max_tokens = max_tokens
        self.temperature = temperature

    def describe(self) -> dict[str, object]:
        return {
            "agent": self.name,
            "llm": self.llm.describe(),
            "select": self.select,
            "score_mode": self.score_mode,
            "repeat_penalty": self.repeat_penalty,
            "history_steps": self.template.history_steps,
            "template": self.template.text,
            "example": self.example,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def prompt(self, turn: Turn) -> str:
        return self.template.render(**template_fields(turn, self.example))

    def act(self, turns: list[Turn]) -> list[Decision]:
        prompts = [self.prompt(t) for t in turns]
        if self.select == "generate":
            return self._generate(turns, prompts)
        return self._choose(turns, prompts)

    def _call(
        self,
        turn: Turn,
        prompt: str,
        completion: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        latency: float,
        params: dict,
    ) -> LLMCall:
        return LLMCall(
            id=new_id(),
            purpose="act",
            backend=self.llm.backend,
            model=self.llm.model,
            prompt=prompt,
            completion=completion,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
            params=params,
            step_idx=len(turn.steps),
        )

    def _generate(self, turns: list[Turn], prompts: list[str]) -> list[Decision]:
        completions = self.llm.complete(
            prompts, max_tokens=self.max_tokens, temperature=self.temperature
        )
        failed = [c for c in completions if not c.ok]
        if failed:
            # Retries are exhausted: stop cleanly; the unfinished episodes are re-played.
            raise LLMUnavailableError(f"LLM call failed after retries: {failed[0].error}")
        out = []
        for turn, prompt, comp in zip(turns, prompts, completions):
            command = match_command(comp.text, turn.state.admissible_commands)
            call = self._call(
                turn,
                prompt,
                comp.text,
                comp.prompt_tokens,
                comp.completion_tokens,
                comp.latency_s,
                comp.params,
            )
            if command is None:
                # Sent to the game as typed: the game's "I don't understand" is the lesson.
                typed = first_line(comp.text) or "look"
                out.append(Decision(typed, False, comp.text, call))
            else:
                out.append(Decision(command, True, comp.text, call))
        return out

    def rank(self, turns: list[Turn], prompts: list[str] | None = None) -> list[Ranking]:
        """Every turn's candidates with the scores the agent ranks them by (`select="choose"`):
        the scoring mode's values minus the repeat penalty, all turns in one LLM call."""
        prompts = prompts if prompts is not None else [self.prompt(t) for t in turns]
        listed = [candidates(t.state) for t in turns]
        scored = self.llm.score(prompts, listed, calibrate=self.score_mode == "calibrated")
        return [
            Ranking(
                cands,
                [v - p for v, p in zip(sc.ranked(self.score_mode), self.penalties(turn, cands))],
                sc,
            )
            for turn, cands, sc in zip(turns, listed, scored)
        ]

    def penalties(self, turn: Turn, commands: list[str]) -> list[float]:
        """The repeat penalty of each command: subtracted from those that changed nothing."""
        return [self.repeat_penalty if c in turn.no_effect else 0.0 for c in commands]

    def _choose(self, turns: list[Turn], prompts: list[str]) -> list[Decision]:
        out = []
        for turn, prompt, ranking in zip(turns, prompts, self.rank(turns, prompts)):
            cands, adjusted, sc = ranking.candidates, ranking.scores, ranking.raw
            best = ranking.best
            top = sorted(zip(adjusted, cands), reverse=True)[:5]
            params = {
                "select": "choose",
                "score_mode": self.score_mode,
                "top": [[c, round(v, 4)] for v, c in top],
            }
            call = self._call(turn, prompt, cands[best], sc.prompt_tokens, 0, sc.latency_s, params)
            out.append(Decision(cands[best], True, None, call))
        return out


def candidates(state: GameState) -> list[str]:
    """The commands the llm agent chooses among with `select="choose"`: the valid ones,
    sorted ("look" where the game lists none)."""
    return sorted(state.admissible_commands) or ["look"]


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def _normal(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"^(>|command:|action:|\d+[.)])\s*", "", text)
    return re.sub(r"\s+", " ", text.strip(" .!\"'`*")).strip()


def match_command(text: str, admissible: list[str]) -> str | None:
    """The admissible command the output names: its first line equal to one (ignoring case,
    quotes, a leading '>' and trailing punctuation), else the longest admissible command
    the first line starts with. None when the output names no admissible command."""
    line = _normal(first_line(text))
    if not line:
        return None
    by_normal = {_normal(c): c for c in admissible}
    if line in by_normal:
        return by_normal[line]
    prefixed = [n for n in by_normal if line.startswith(n + " ")]
    if prefixed:
        return by_normal[max(prefixed, key=len)]
    return None


def make_agent(name: str, llm: LLM | None = None, **options) -> Agent:
    """An agent by name; `llm` is needed (and only used) by the llm agent."""
    if name == "random":
        return RandomAgent()
    if name == "expert":
        return ExpertAgent()
    if name == "llm":
        if llm is None:
            raise WorkbenchError("the llm agent needs an llm (a local model or an openai endpoint)")
        return LLMAgent(llm, **options)
    raise WorkbenchError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
