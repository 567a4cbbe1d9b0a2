"""A recorded step of a played episode, as the agent faced it: its prompt rebuilt exactly.

What explain-step (`agents.explain_step`) and step patching (`agents.step_patching`) start
from. The run's agent (template, worked example, selection, scoring, repeat penalty) is
rebuilt around the explaining model, the step's turn is rebuilt from the store (the episode's
tips, the earlier steps, the step's observation and admissible commands), and the prompt is
rendered from it and checked character for character against the prompt recorded in
`llm_calls`. The goal and inventory, which steps do not store, are read back from the
recorded prompt through the template.

Prompts are rendered by `LLMAgent.prompt`, with the turn -> field mapping of
`agents.prompt.template_fields`, so a change to how the agent builds prompts reaches here
by construction.

    >>> from agents.recorded_step import recorded_step, run_model
    >>> lm = run_model(store, "l1-self")                                  # doctest: +SKIP
    >>> step = recorded_step(store, "l1-self", "3f2a9c1b7d10", 2, lm)     # doctest: +SKIP
    >>> step.action, step.prompt[:40]                                    # doctest: +SKIP
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.policies import LLMAgent
from agents.prompt import FIELDS, PromptTemplate, template_fields
from agents.trajectory import EpisodeSpec, Step, Turn
from games import GameInfo, GameState
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store

if TYPE_CHECKING:
    from explainers.explanation import Explanation


@dataclass
class RecordedStep:
    """A recorded step, ready to re-choose: the run's agent, the turn, its prompt (equal to
    the recorded one) and the action the agent took."""

    run: dict[str, Any]  # the play run's record (`workbench.store.runs.get_run`)
    episode_id: str
    step: int
    agent: LLMAgent
    turn: Turn
    prompt: str
    action: str

    @property
    def where(self) -> dict[str, Any]:
        """The step's address, as an explanation of it records it (`extras["step"]`)."""
        return {"run": self.run["name"], "episode_id": self.episode_id, "step": self.step}

    def save_explanation(
        self,
        store: Store,
        explanation: Explanation,
        *,
        total: float,
        segments: dict[str, float] | None = None,
        tips: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Store an explanation of this step's action, linked to the step; returns its id
        (also set on `explanation`)."""
        explanation.extras["step"] = self.where
        explanation.id = tips_store.save_step_explanation(
            store,
            {
                "run_id": self.run["id"],
                "episode_id": self.episode_id,
                "step_idx": self.step,
                "method": explanation.method,
                "action": self.action,
                "total": total,
                "segments": segments or {},
                "tips": tips or [],
                "params": params or {},
            },
            explanation.to_record(),
        )
        return explanation.id


def recorded_step(
    store: Store, run: str, episode_id: str, step: int, lm: LoadedModel
) -> RecordedStep:
    """The step (0-based) of a run's episode as the agent faced it, with `lm` behind the
    run's agent; its prompt is rebuilt and checked against the recorded one."""
    record = runs.require_run(store, run)
    episode, rows = _episode_steps(store, record, episode_id, step)
    row = rows[step]
    agent = run_agent(record, lm)
    history, no_effect = _history(rows, step)
    spec = EpisodeSpec(_game_info(episode), episode["trial"], episode["condition"], episode["tips"])
    state = GameState(
        observation=row["observation"],
        score=rows[step - 1]["score"] if step else 0,
        max_score=int(episode["max_score"]),
        moves=step,
        done=False,
        won=False,
        lost=False,
        objective="",
        admissible_commands=list(row["admissible"]),
    )
    turn = Turn(spec, state, history, random.Random(0), no_effect)
    unknown = _read_back(agent.template, field_values(agent, turn), row["prompt"])
    state.objective = unknown.get("objective", "")
    state.inventory = unknown.get("inventory", "")
    prompt = agent.prompt(turn)
    if prompt != row["prompt"]:
        raise WorkbenchError(
            f"the prompt of step {step} could not be rebuilt exactly from the store "
            "(was the run played with another template?)"
        )
    return RecordedStep(record, episode_id, step, agent, turn, prompt, row["action"])


def run_model(
    store: Store, run: str, *, device: str = "auto", dtype: str = "auto", progress: bool = False
) -> LoadedModel:
    """The local model a run played with, with the fine-tuning adapter it played with (a run
    on an endpoint needs an explicit model), on `device` in `dtype`. An adapter whose
    weights changed since the run is refused: its decisions would not be the run's."""
    return record_model(runs.require_run(store, run), device=device, dtype=dtype, progress=progress)


def record_model(
    record: dict[str, Any], *, device: str = "auto", dtype: str = "auto", progress: bool = False
) -> LoadedModel:
    """`run_model` from the run's record (`runs.require_run`): what a torchrun rank without
    the store loads, from the record rank 0 read."""
    from workbench.models import check_adapter_unchanged, load_model

    run = record["name"]
    llm = (record["params"] or {}).get("llm") or {}
    if llm.get("backend") != "local":
        raise WorkbenchError(
            f"run {run!r} was played by {llm.get('backend') or 'no'} LLM "
            f"{llm.get('model', '')!r}; attribution needs the weights: pass a local model as lm"
        )
    adapter = llm.get("adapter")
    if adapter is not None:
        check_adapter_unchanged(adapter, llm.get("adapter_sha256"))
    return load_model(
        llm.get("model"), device=device, dtype=dtype, adapter=adapter, progress=progress
    )


# -- the template, field by field ------------------------------------------------------------


def field_values(agent: LLMAgent, turn: Turn) -> dict[str, str]:
    """Each template field's text in the agent's prompt for `turn`, rendered by the agent's
    template itself (a template of one field renders exactly that field's text)."""
    template, kwargs = agent.template, template_fields(turn, agent.example)
    return {
        name: PromptTemplate(
            "{" + name + "}", template.history_steps, template.max_observation_chars
        ).render(**kwargs)
        for name in FIELDS
    }


def field_spans(template: PromptTemplate, values: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Character span of each field's text in the rendered prompt (a field used twice:
    its first use), found by walking the template's literal text and field values."""
    spans: dict[str, list[tuple[int, int]]] = {}
    pos = 0
    for literal, name in _pieces(template):
        pos += len(literal)
        if name is not None:
            spans.setdefault(name, []).append((pos, pos + len(values[name])))
            pos += len(values[name])
    return {name: found[0] for name, found in spans.items()}


def _pieces(template: PromptTemplate) -> list[tuple[str, str | None]]:
    """The template as (literal text, field name or None) pairs, in order."""
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template.text):
        if spec or conversion:
            raise WorkbenchError(
                f"field {{{name}}} of the run's template has a format spec or conversion; "
                "explain-step needs plain fields"
            )
        out.append((literal, name))
    return out


def _read_back(template: PromptTemplate, values: dict[str, str], prompt: str) -> dict[str, str]:
    """The goal and inventory as they appear in the recorded prompt: every other field's
    text is known, so the template becomes a pattern with two holes."""
    pattern, seen = [], set()
    for literal, name in _pieces(template):
        pattern.append(re.escape(literal))
        if name is None:
            continue
        if name in ("objective", "inventory"):
            pattern.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
            seen.add(name)
        else:
            pattern.append(re.escape(values[name]))
    match = re.fullmatch("".join(pattern), prompt, flags=re.DOTALL)
    if match is None:
        raise WorkbenchError(
            "the recorded prompt does not match the run's template, tips and steps; "
            "it cannot be rebuilt exactly"
        )
    return match.groupdict()


# -- the store's rows, as the agent saw them ------------------------------------------------


def _episode_steps(
    store: Store, record: dict[str, Any], episode_id: str, step: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The episode and its step rows, once the step is known to be an LLM's choice."""
    episode = play_store.get_episode(store, episode_id)
    if episode is None or episode["run_id"] != record["id"]:
        raise WorkbenchError(f"run {record['name']!r} has no episode {episode_id!r}")
    rows = play_store.get_steps(store, episode_id)
    if not 0 <= step < len(rows):
        raise WorkbenchError(
            f"episode {episode_id} has steps 0 to {len(rows) - 1}; there is no step {step}"
        )
    if not rows[step].get("prompt"):
        raise WorkbenchError(
            f"step {step} of episode {episode_id} was not chosen by an LLM "
            f"(agent {episode['agent']}); only llm-agent steps can be explained"
        )
    return episode, rows


def run_agent(run: dict[str, Any], lm: LoadedModel) -> LLMAgent:
    """The run's llm agent with the explaining model behind it (same prompt, selection,
    scoring and penalty as when it played)."""
    from workbench.llm.local import LocalLLM

    params = run["params"] or {}
    template = PromptTemplate(
        params.get("template") or PromptTemplate().text, int(params.get("history_steps", 5))
    )
    return LLMAgent(
        LocalLLM(lm, spare_core=False),  # no game runs beside the explanation
        select=params.get("select", "choose"),
        template=template,
        score_mode=params.get("score_mode", "sum"),
        repeat_penalty=float(params.get("repeat_penalty", 3.0)),
        example=params.get("example") or "",
        max_tokens=int(params.get("max_tokens", 16)),
        temperature=float(params.get("temperature", 0.0)),
    )


def _game_info(episode: dict[str, Any]) -> GameInfo:
    return GameInfo(
        id=episode["game_id"],
        path=Path(episode.get("game_path") or ""),
        level=None,
        split=None,
        seed=None,
        max_score=int(episode["max_score"]),
        walkthrough_steps=0,
    )


def _history(rows: list[dict[str, Any]], upto: int) -> tuple[list[Step], set[str]]:
    """The steps before `upto` as the agent saw them, and the commands among them that
    changed nothing (the agent's repeat penalty needs them)."""
    steps, no_effect = [], set()
    previous_score = 0
    for i, r in enumerate(rows[:upto]):
        after = rows[i + 1]["facts"] if i + 1 < len(rows) else None
        changed = after != r["facts"] or r["score"] != previous_score
        if not changed:
            no_effect.add(r["action"])
        previous_score = r["score"]
        steps.append(
            Step(
                idx=r["idx"],
                observation=r["observation"],
                admissible=r["admissible"],
                facts=r["facts"],
                action=r["action"],
                valid=r["valid"],
                reward=r["reward"],
                score=r["score"],
                feedback=r["feedback"],
                done=r["done"],
                changed=changed,
                raw_output=r.get("raw_output"),
            )
        )
    return steps, no_effect
