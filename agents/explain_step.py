"""Explaining one recorded decision of the agent: how much of it came from the tips?

The bridge between the two halves of the workbench. For a step of a played episode:

1. The exact prompt of that step is rebuilt from the store (run template and worked
   example, the episode's tips, the earlier steps, the step's observation and admissible
   commands), and checked character for character against the prompt recorded in
   `llm_calls`. The goal and inventory, which steps do not store, are read back from the
   recorded prompt through the template.
2. The chosen command, as the continuation of the model's real input (the prompt inside the
   chat template), is attributed with any attribution method of `explainers` (integrated
   gradients by default).
3. Token attributions are summed per prompt segment, using character spans that come from
   rendering the template (so they follow any user template), mapped to tokens through
   the tokenizer's offsets: instructions (the template's own text, the goal and the chat
   scaffold), tips, history, observation (with the inventory), admissible commands, and the
   worked example where the run had one. Every token belongs to exactly one segment, so
   the segment masses add up to the action's total attribution. A tip's mass is the mass
   of the tips segment's tokens within that tip's text; the rest of the segment (the
   "Tips:" header, the bullets and line breaks) is its scaffold, so the tip masses plus the
   scaffold are the tips segment, token for token. Each token's segment is kept in the
   explanation (`extras["token_segments"]`, its tip in `extras["token_tips"]` and its
   characters in `extras["token_offsets"]`), so heatmaps show the prompt in its sections.
4. Tip ablation: each tip is removed in turn and the command re-chosen with the run's own
   selection method (ranking or generation, same scoring and repeat penalty); a changed
   command means that tip was needed for this decision.

The motivation is Chen et al. 2023 ("Introspective Tips"): tips are meant to steer the
agent, and this measures whether they did.

    >>> from agents.explain_step import explain_step
    >>> result = explain_step(Store(), "l1-self", "3f2a9c1b7d10", 2)      # doctest: +SKIP
    >>> result.segments                                                   # doctest: +SKIP
    {'instructions': 0.41, 'tips': 1.92, 'history': 0.05, 'observation': 0.73, ...}
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.policies import LLMAgent, Turn
from agents.prompt import PromptTemplate
from agents.trajectory import EpisodeSpec, Step
from games import GameInfo, GameState
from workbench.errors import WorkbenchError
from workbench.store import Store, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store

if TYPE_CHECKING:
    from explainers.base import Progress

SEGMENTS = ("instructions", "tips", "history", "observation", "admissible")
# Which segment each template field belongs to; the template's literal text and anything
# the chat template adds around the prompt count as instructions.
FIELD_SEGMENT = {
    "objective": "instructions",
    "tips": "tips",
    "example": "example",
    "history": "history",
    "observation": "observation",
    "inventory": "observation",
    "commands": "admissible",
}


@dataclass
class StepExplanation:
    """Where the attribution of one recorded action went.

    `segments` maps each prompt segment to its summed attribution (they add up to
    `total`, the action's whole attribution); `tips` has, per tip in force, its mass and
    what removing it did: {"tip", "mass", "action_changed", "new_action"}.
    """

    explanation_id: str
    segments: dict[str, float]
    tips: list[dict]
    action: str
    total: float
    tip_scaffold: float = 0.0  # tips segment minus the tips' masses: header, bullets, breaks
    run: str = ""
    episode_id: str = ""
    step: int = 0
    method: str = "ig"
    prompt: str = ""
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # in `prompt`
    reproduced: bool = True  # the explaining model re-chose the recorded action
    explanation: Any = None  # the full explainers.Explanation (token-level scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "explanation_id": self.explanation_id,
            "run": self.run,
            "episode_id": self.episode_id,
            "step": self.step,
            "method": self.method,
            "action": self.action,
            "total": self.total,
            "segments": self.segments,
            "tips": self.tips,
            "tip_scaffold": self.tip_scaffold,
            "reproduced": self.reproduced,
            "spans": {k: [list(s) for s in v] for k, v in self.spans.items()},
        }


# -- rebuilding the prompt -------------------------------------------------------------------


@dataclass
class _Recorded:
    """What the store says about a step, ready to rebuild its prompt and re-choose it."""

    agent: LLMAgent
    turn: Turn
    prompt: str
    action: str


def _field_values(template: PromptTemplate, turn: Turn, example: str) -> dict[str, str]:
    """Each template field's rendered text, rendered by the template itself (a template
    of one field renders exactly that field's text)."""
    state = turn.state
    kwargs = dict(
        objective=state.objective,
        observation=state.observation,
        inventory=state.inventory,
        commands=sorted(state.admissible_commands),
        tips=turn.spec.tips,
        history=[(s.action, s.feedback) for s in turn.steps],
        example=example,
    )
    return {
        name: PromptTemplate(
            "{" + name + "}", template.history_steps, template.max_observation_chars
        ).render(**kwargs)
        for name in FIELD_SEGMENT
    }


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


def _agent_for(run: dict[str, Any], lm: Any) -> LLMAgent:
    """The run's llm agent with the explaining model behind it (same prompt, selection,
    scoring and penalty as when it played)."""
    from workbench.llm.local import LocalLLM

    params = run["params"] or {}
    template = PromptTemplate(
        params.get("template") or PromptTemplate().text, int(params.get("history_steps", 5))
    )
    return LLMAgent(
        LocalLLM(lm),
        select=params.get("select", "choose"),
        template=template,
        score_mode=params.get("score_mode", "sum"),
        repeat_penalty=float(params.get("repeat_penalty", 3.0)),
        example=params.get("example") or "",
        max_tokens=int(params.get("max_tokens", 16)),
        temperature=float(params.get("temperature", 0.0)),
    )


def recorded_step(
    store: Store, run: str, episode_id: str, step: int, lm: Any
) -> tuple[dict[str, Any], _Recorded]:
    """The run record and the step as the agent faced it, its prompt rebuilt and checked."""
    record = runs.get_run(store, run, kind="play")
    if record is None:
        raise WorkbenchError(f"no play run named {run!r} in {store.path}")
    episode = play_store.get_episode(store, episode_id)
    if episode is None or episode["run_id"] != record["id"]:
        raise WorkbenchError(f"run {record['name']!r} has no episode {episode_id!r}")
    rows = play_store.get_steps(store, episode_id)
    if not 0 <= step < len(rows):
        raise WorkbenchError(
            f"episode {episode_id} has steps 0 to {len(rows) - 1}; there is no step {step}"
        )
    row = rows[step]
    if not row.get("prompt"):
        raise WorkbenchError(
            f"step {step} of episode {episode_id} was not chosen by an LLM "
            f"(agent {episode['agent']}); only llm-agent steps can be explained"
        )
    agent = _agent_for(record, lm)
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
    values = _field_values(agent.template, turn, agent.example)
    unknown = _read_back(agent.template, values, row["prompt"])
    state.objective = unknown.get("objective", "")
    state.inventory = unknown.get("inventory", "")
    prompt = agent.prompt(turn)
    if prompt != row["prompt"]:
        raise WorkbenchError(
            f"the prompt of step {step} could not be rebuilt exactly from the store "
            "(was the run played with another template?)"
        )
    return record, _Recorded(agent, turn, prompt, row["action"])


# -- attribution per segment -----------------------------------------------------------------


def _token_segments(
    lm: Any, text: str, n_tokens: int, regions: list[tuple[int, int, str]]
) -> list[str]:
    """The segment of each input token: the region its characters overlap most (tokens of
    the chat scaffold and of the template's own text fall outside every region)."""
    tok = lm.tokenizer
    if not getattr(tok, "is_fast", False):
        raise WorkbenchError("explain-step needs a fast tokenizer (character offsets)")
    enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
    if len(enc["input_ids"]) != n_tokens:
        raise WorkbenchError("the tokenizer's offsets do not line up with the explanation")
    out = []
    for start, end in enc["offset_mapping"]:
        best, best_overlap = "instructions", 0
        for r_start, r_end, name in regions:
            overlap = min(end, r_end) - max(start, r_start)
            if overlap > best_overlap:
                best, best_overlap = name, overlap
        out.append(best)
    return out


def _offsets(lm: Any, text: str) -> list[list[int]]:
    enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return [[int(a), int(b)] for a, b in enc["offset_mapping"]]


def explain_step(
    store: Store,
    run: str,
    episode_id: str,
    step: int,
    method: str = "ig",
    lm: Any = None,
    progress: Progress | None = None,
    **params: Any,
) -> StepExplanation:
    """Attribute the action of a recorded step to its prompt's segments and tips, ablate
    each tip, and store the result linked to the step.

    Args:
        store: the workbench store holding the run.
        run / episode_id / step: the step (0-based) to explain.
        method: any attribution method of `explainers` (ig, saliency, occlusion, ...).
        lm: the model to explain with (`workbench.models.load_model`); default: the model
            the run played with, when it was a local one.
        progress: `progress(done, total)` as the attribution advances (IG knots,
            perturbation samples), for a progress bar.
        params: the method's own parameters (for ig: steps, baseline, ...).

    Returns a `StepExplanation`; its `explanation_id` names the stored token-level
    `Explanation`, and the row in `step_explanations` links it to the step.
    """
    from explainers import explain, get_method

    explainer = get_method(method)
    if explainer.category != "attribution":
        raise WorkbenchError(
            f"{method}: {explainer.category} methods cannot explain a step; "
            "explain-step needs an attribution method, such as ig"
        )
    if lm is None:
        lm = run_model(store, run)
    record, recorded = recorded_step(store, run, episode_id, step, lm)
    agent, turn, prompt = recorded.agent, recorded.turn, recorded.prompt
    text = agent.llm.format_prompt(prompt)
    offset = text.find(prompt)
    if offset < 0:
        raise WorkbenchError("the chat template changes the prompt's text; cannot map segments")
    exp = explain(lm, text, method=method, target=recorded.action, progress=progress, **params)
    masses = np.asarray(exp.scores, dtype=np.float64).sum(axis=0)  # over the action's tokens
    values = _field_values(agent.template, turn, agent.example)
    spans = field_spans(agent.template, values)
    regions = [(offset + s, offset + e, FIELD_SEGMENT[name]) for name, (s, e) in spans.items()]
    tip_spans = _tip_spans(values["tips"], spans.get("tips", (0, 0))[0], turn.spec.tips)
    tip_regions = [(offset + s, offset + e, f"tip:{i}") for i, (s, e) in enumerate(tip_spans)]
    token_segment = _token_segments(lm, text, len(masses), regions)
    token_tip = _token_segments(lm, text, len(masses), tip_regions)
    segments = {name: 0.0 for name in SEGMENTS}
    if any(FIELD_SEGMENT[n] == "example" and e > s for n, (s, e) in spans.items()):
        segments["example"] = 0.0
    for name, mass in zip(token_segment, masses):
        segments[name] = segments.get(name, 0.0) + float(mass)
    # A token counts for a tip only inside the tips segment, so that the tips' masses and
    # the scaffold partition that segment (a token straddling a tip's edge and the next
    # field goes where its segment is).
    tip_of = [
        int(tip[4:]) if segment == "tips" and tip.startswith("tip:") else None
        for segment, tip in zip(token_segment, token_tip)
    ]
    tip_mass = [0.0] * len(turn.spec.tips)
    for tip, mass in zip(tip_of, masses):
        if tip is not None:
            tip_mass[tip] += float(mass)
    scaffold = sum(
        float(m) for s, tip, m in zip(token_segment, tip_of, masses) if s == "tips" and tip is None
    )
    rechosen, ablated = _ablate(agent, turn)
    tips = [
        {
            "tip": tip,
            "mass": tip_mass[i],
            "action_changed": ablated[i] != rechosen,
            "new_action": ablated[i],
        }
        for i, tip in enumerate(turn.spec.tips)
    ]
    total = float(masses.sum())
    exp.extras["step"] = {"run": record["name"], "episode_id": episode_id, "step": step}
    exp.extras["token_segments"] = token_segment
    exp.extras["token_tips"] = tip_of
    if exp.input_text == text:
        # Where each token sits in the text: heatmaps show the prompt's own characters
        # (spaces, line breaks) even where a tokenizer's decoding drops them.
        exp.extras["token_offsets"] = _offsets(lm, text)
    exp_id = tips_store.save_step_explanation(
        store,
        {
            "run_id": record["id"],
            "episode_id": episode_id,
            "step_idx": step,
            "method": method,
            "action": recorded.action,
            "total": total,
            "segments": segments,
            "tips": tips,
            "params": {**exp.params, "reproduced": rechosen == recorded.action},
        },
        exp.to_record(),
    )
    exp.id = exp_id
    return StepExplanation(
        explanation_id=exp_id,
        segments=segments,
        tips=tips,
        action=recorded.action,
        total=total,
        tip_scaffold=scaffold,
        run=record["name"],
        episode_id=episode_id,
        step=step,
        method=method,
        prompt=prompt,
        spans={
            seg: [(s, e) for n, (s, e) in spans.items() if FIELD_SEGMENT[n] == seg and e > s]
            for seg in {*SEGMENTS, "example"}
        },
        reproduced=rechosen == recorded.action,
        explanation=exp,
    )


def _tip_spans(rendered: str, start: int, tips: list[str]) -> list[tuple[int, int]]:
    """Each tip's characters within the rendered tips section (found in order, so two
    equal tips get their own spans)."""
    spans, cursor = [], 0
    for tip in tips:
        at = rendered.find(tip, cursor)
        if at < 0:
            spans.append((0, 0))
            continue
        spans.append((start + at, start + at + len(tip)))
        cursor = at + len(tip)
    return spans


def _ablate(agent: LLMAgent, turn: Turn) -> tuple[str, list[str]]:
    """The command the agent chooses with all tips, and with each tip removed in turn,
    all in one batch."""
    tips = list(turn.spec.tips)
    variants = [tips] + [tips[:i] + tips[i + 1 :] for i in range(len(tips))]
    turns = [
        Turn(
            EpisodeSpec(turn.spec.game, turn.spec.trial, turn.spec.condition, list(v)),
            turn.state,
            turn.steps,
            random.Random(0),
            set(turn.no_effect),
        )
        for v in variants
    ]
    actions = [d.action for d in agent.act(turns)]
    return actions[0], actions[1:]


def run_model(store: Store, run: str) -> Any:
    """The local model a run played with, with the fine-tuning adapter it played with (a run
    on an endpoint needs an explicit model)."""
    from workbench.models import load_model

    record = runs.get_run(store, run, kind="play")
    if record is None:
        raise WorkbenchError(f"no play run named {run!r} in {store.path}")
    llm = (record["params"] or {}).get("llm") or {}
    if llm.get("backend") != "local":
        raise WorkbenchError(
            f"run {run!r} was played by {llm.get('backend') or 'no'} LLM "
            f"{llm.get('model', '')!r}; attribution needs the weights: pass --model"
        )
    return load_model(llm.get("model"), progress=False, adapter=llm.get("adapter"))
