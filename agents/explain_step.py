"""Explaining one recorded decision of the agent: how much of it came from the tips?

The bridge between the two halves of the workbench. For a step of a played episode:

1. The exact prompt of that step is rebuilt from the store and checked character for
   character against the recorded one (`agents.recorded_step`).
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
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.policies import LLMAgent
from agents.recorded_step import RecordedStep, field_spans, field_values, recorded_step, run_model
from agents.trajectory import EpisodeSpec, Turn
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store

if TYPE_CHECKING:
    from explainers.explainer import Progress
    from explainers.explanation import Explanation

DEFAULT_METHOD = "ig"
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
    explanation: Explanation | None = None  # the full explanation (token-level scores)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: every field but the prompt and the token-level explanation (stored
        on their own), spans as lists."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        del data["prompt"], data["explanation"]
        data["spans"] = {k: [list(s) for s in v] for k, v in self.spans.items()}
        return data


# -- attribution per segment -----------------------------------------------------------------


def step_methods() -> list[str]:
    """The methods that can explain a step (every attribution method), the default first."""
    from explainers import known_methods

    names = [n for n, cls in known_methods().items() if cls.category == "attribution"]
    return sorted(names, key=lambda n: n != DEFAULT_METHOD)


def explain_step(
    store: Store,
    run: str,
    episode_id: str,
    step: int,
    method: str = DEFAULT_METHOD,
    lm: LoadedModel | None = None,
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
    recorded = recorded_step(store, run, episode_id, step, lm)
    text = recorded.agent.llm.format_prompt(recorded.prompt)
    offset = text.find(recorded.prompt)
    if offset < 0:
        raise WorkbenchError("the chat template changes the prompt's text; cannot map segments")
    exp = explain(lm, text, method=method, target=recorded.action, progress=progress, **params)
    split = _split_by_segment(lm, recorded, text, offset, exp)
    rechosen, ablated = _ablate(recorded.agent, recorded.turn)
    tips = [
        {
            "tip": tip,
            "mass": split.tip_masses[i],
            "action_changed": ablated[i] != rechosen,
            "new_action": ablated[i],
        }
        for i, tip in enumerate(recorded.turn.spec.tips)
    ]
    total = float(split.masses.sum())
    reproduced = rechosen == recorded.action
    exp.extras["token_segments"] = split.token_segments
    exp.extras["token_tips"] = split.token_tips
    if exp.input_text == text:
        # Where each token sits in the text: heatmaps show the prompt's own characters
        # (spaces, line breaks) even where a tokenizer's decoding drops them.
        exp.extras["token_offsets"] = _offsets(lm, text)
    recorded.save_explanation(
        store,
        exp,
        total=total,
        segments=split.segments,
        tips=tips,
        params={**exp.params, "reproduced": reproduced},
    )
    return StepExplanation(
        explanation_id=exp.id,
        segments=split.segments,
        tips=tips,
        action=recorded.action,
        total=total,
        tip_scaffold=split.tip_scaffold,
        **recorded.where,  # run, episode_id, step
        method=method,
        prompt=recorded.prompt,
        spans=split.spans,
        reproduced=reproduced,
        explanation=exp,
    )


@dataclass
class _SegmentSplit:
    """An explanation's per-token masses (summed over the action's tokens), and how they fall
    into the prompt's segments and tips."""

    masses: np.ndarray  # [input tokens]
    segments: dict[str, float]
    token_segments: list[str]
    token_tips: list[int | None]  # the tip of each token inside the tips segment
    tip_masses: list[float]
    tip_scaffold: float
    spans: dict[str, list[tuple[int, int]]]  # segment -> its fields' spans in the prompt


def _split_by_segment(
    lm: LoadedModel, recorded: RecordedStep, text: str, offset: int, exp: Explanation
) -> _SegmentSplit:
    """Sum the explanation's token masses per prompt segment and per tip. `text` is the
    model's input (the prompt inside the chat template), the prompt starting at `offset`."""
    agent, turn = recorded.agent, recorded.turn
    masses = np.asarray(exp.scores, dtype=np.float64).sum(axis=0)  # over the action's tokens
    values = field_values(agent, turn)
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
    return _SegmentSplit(
        masses=masses,
        segments=segments,
        token_segments=token_segment,
        token_tips=tip_of,
        tip_masses=tip_mass,
        tip_scaffold=scaffold,
        spans={
            seg: [(s, e) for n, (s, e) in spans.items() if FIELD_SEGMENT[n] == seg and e > s]
            for seg in {*SEGMENTS, "example"}
        },
    )


def _token_segments(
    lm: LoadedModel, text: str, n_tokens: int, regions: list[tuple[int, int, str]]
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


def _offsets(lm: LoadedModel, text: str) -> list[list[int]]:
    enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return [[int(a), int(b)] for a, b in enc["offset_mapping"]]


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
