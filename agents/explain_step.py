"""Explaining one recorded decision of the agent: why this command rather than the others,
and how much of it came from the tips?

The bridge between the two halves of the workbench. For a step of a played episode:

1. The exact prompt of that step is rebuilt from the store and checked character for
   character against the recorded one (`agents.recorded_step`).
2. What is explained is the decision (`explainers.choice`): by default the choice,
   log p(chosen | candidates) from the agent's own candidate scores (same scoring mode and
   repeat penalty that chose it); or the margin over the runner-up; or the chosen text's
   log-probability (`logprob`, the only one for runs that generated their commands).
3. The attribution: on a CPU by default, Shapley values of the prompt's segments and tips
   (`segment_shapley`: exact for up to six players, sampled with error bars beyond, each
   coalition over the prompt's cache), which add up to v(all) - v(none) exactly; on a GPU
   by default, and with `method="ig"` anywhere, token-level integrated gradients, whose
   completeness is reported. Any attribution method of `explainers` can be named.
4. Token attributions are summed per prompt segment, using character spans that come from
   rendering the template (so they follow any user template), mapped to tokens through
   the tokenizer's offsets: instructions (the template's own text, the goal and the chat
   scaffold), tips, history, observation, inventory, the recipe (wherever the cookbook's
   text appears), admissible commands, and the worked example where the run had one.
   Every token belongs to exactly one segment, so the segment masses add up to the total.
   A tip's mass is the mass of the tips segment's tokens within that tip's text; the rest
   of the segment (the "Tips:" header, the bullets and line breaks) is its scaffold. Each
   token's segment is kept in the explanation (`extras["token_segments"]`, its tip in
   `extras["token_tips"]` and its characters in `extras["token_offsets"]`), so heatmaps
   show the prompt in its sections.
5. Tip ablation: each tip is removed in turn, the command re-chosen with the run's own
   selection method, and the objective re-read without it; a changed command means that
   tip was needed for this decision.

The motivation is Chen et al. 2023 ("Introspective Tips"): tips are meant to steer the
agent, and this measures whether they did.

    >>> from agents.explain_step import explain_step
    >>> result = explain_step(Store(), "l1-self", "3f2a9c1b7d10", 2)      # doctest: +SKIP
    >>> result.segments                                                   # doctest: +SKIP
    {'instructions': 0.0, 'tips': 0.41, 'history': 0.05, 'observation': 0.73, ...}
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.policies import candidates
from agents.recorded_step import RecordedStep, field_spans, field_values, recorded_step, run_model
from agents.trajectory import EpisodeSpec, Turn
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store

if TYPE_CHECKING:
    from explainers.explainer import Progress
    from explainers.explanation import Explanation
    from explainers.objective import Objective

AUTO = "auto"
CPU_METHOD = "segment_shapley"  # exact or sampled Shapley values of segments and tips
GPU_METHOD = "ig"  # the token-level heatmap, where forwards and backwards are cheap
OBJECTIVES = ("choice", "margin", "logprob")
SEGMENTS = (
    "instructions",
    "tips",
    "history",
    "observation",
    "inventory",
    "recipe",
    "admissible",
)
# Which segment each template field belongs to; the template's literal text and anything
# the chat template adds around the prompt count as instructions.
FIELD_SEGMENT = {
    "objective": "instructions",
    "tips": "tips",
    "example": "example",
    "history": "history",
    "observation": "observation",
    "inventory": "inventory",
    "commands": "admissible",
}
# The cookbook's text, wherever the game showed it (an observation, a past step's reply):
# from "Recipe #1" to the last line of its directions.
RECIPE = re.compile(r"Recipe #\d+[\s\S]*?Directions:[^\S\n]*\n(?:[^\S\n]+\S[^\n]*(?:\n|$))*")
# A tip whose mass and ablation effect differ in sign by more than this (in the
# objective's units) gets a note on how to read it.
DISAGREEMENT = 1e-3


@dataclass
class StepExplanation:
    """Where the attribution of one recorded decision went.

    `segments` maps each prompt segment to its summed attribution (they add up to
    `total`); `tips` has, per tip in force, its mass and what removing it did:
    {"tip", "mass", "action_changed", "new_action", "effect"}, `effect` being the
    objective with the tip minus without it. `check` says whether the masses are exact
    (Shapley values: complete by construction) or how complete they are (IG's delta).
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
    method: str = CPU_METHOD
    objective: str = "choice"
    value: float = 0.0  # the objective at the real prompt
    check: dict[str, Any] = field(default_factory=dict)  # expected, delta, status, knots...
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


# -- what is explained, and how ----------------------------------------------------------------


def step_methods() -> list[str]:
    """The methods that can explain a step: auto (segment Shapley values on a CPU,
    integrated gradients on a GPU), then every attribution method."""
    from explainers import known_methods

    names = [n for n, cls in known_methods().items() if cls.category == "attribution"]
    order = {CPU_METHOD: 0, GPU_METHOD: 1}
    return [AUTO, *sorted(names, key=lambda n: (order.get(n, 2), n))]


def resolve_method(method: str, device: str) -> str:
    """`auto` -> segment_shapley on a CPU, ig on a GPU (`device` as given: cpu, cuda[:N]
    or auto); any other name is checked to be an attribution method."""
    from explainers import get_method

    if method == AUTO:
        if device == "auto":
            import torch

            return GPU_METHOD if torch.cuda.is_available() else CPU_METHOD
        return CPU_METHOD if device == "cpu" else GPU_METHOD
    explainer = get_method(method)
    if explainer.category != "attribution":
        raise WorkbenchError(
            f"{method}: {explainer.category} methods cannot explain a step; "
            "explain-step needs an attribution method, such as ig"
        )
    return method


def check_objective(objective: str | None) -> None:
    if objective is not None and objective not in OBJECTIVES:
        raise WorkbenchError(f"objective must be {', '.join(OBJECTIVES)}, not {objective!r}")


def step_objective(
    lm: LoadedModel, recorded: RecordedStep, text: str, objective: str | None
) -> Objective:
    """The objective of the recorded decision on `text` (the prompt in the chat template)
    for `lm`: default `choice` for a run that ranked commands, `logprob` for one that
    generated them."""
    from explainers.choice import prepare_choice
    from explainers.objective import prepare

    agent, turn = recorded.agent, recorded.turn
    generated = agent.select != "choose"
    kind = objective or ("logprob" if generated else "choice")
    check_objective(kind)
    if kind == "logprob":
        return prepare(lm, text, recorded.action)
    if generated:
        raise WorkbenchError(
            f"run {recorded.run['name']!r} generated its commands (select generate): there "
            f"are no candidate scores for the {kind} objective; use objective logprob"
        )
    cands = candidates(turn.state)
    if recorded.action not in cands:
        raise WorkbenchError(f"the recorded action {recorded.action!r} is not a candidate")
    offsets = agent.penalties(turn, cands)
    if agent.score_mode == "calibrated":
        neutral = agent.llm.neutral_logprobs(set(cands))  # type: ignore[attr-defined]
        offsets = [o + neutral[c][0] for o, c in zip(offsets, cands)]
    return prepare_choice(
        lm,
        text,
        cands,
        recorded.action,
        objective=kind,
        score_mode="mean" if agent.score_mode == "mean" else "sum",
        offsets=offsets,
    )


def explain_step(
    store: Store,
    run: str,
    episode_id: str,
    step: int,
    method: str = AUTO,
    lm: LoadedModel | None = None,
    progress: Progress | None = None,
    objective: str | None = None,
    **params: Any,
) -> StepExplanation:
    """Attribute a recorded decision to its prompt's segments and tips, ablate each tip,
    and store the result linked to the step.

    Args:
        store: the workbench store holding the run.
        run / episode_id / step: the step (0-based) to explain.
        method: "auto" (segment_shapley on a CPU, ig on a GPU) or any attribution method
            of `explainers` (ig, saliency, occlusion, ...).
        lm: the model to explain with (`workbench.models.load_model`); default: the model
            the run played with, when it was a local one.
        progress: `progress(done, total)` as the attribution advances (coalitions, IG
            knots, perturbation samples), for a progress bar.
        objective: "choice" (default for runs that ranked commands), "margin" or
            "logprob" (default for runs that generated them).
        params: the method's own parameters (for ig: steps, baseline, ...; for
            segment_shapley: max_evals, seed).

    Returns a `StepExplanation`; its `explanation_id` names the stored token-level
    `Explanation`, and the row in `step_explanations` links it to the step.
    """
    from explainers import get_method

    check_objective(objective)
    if lm is None:
        lm = run_model(store, run)
    method = resolve_method(method, lm.device.type)
    explainer = get_method(method)
    params = explainer.check_params(params)
    recorded = recorded_step(store, run, episode_id, step, lm)
    text = recorded.agent.llm.format_prompt(recorded.prompt)
    offset = text.find(recorded.prompt)
    if offset < 0:
        raise WorkbenchError("the chat template changes the prompt's text; cannot map segments")
    obj = step_objective(lm, recorded, text, objective)
    layout = step_layout(lm, recorded, text, offset)
    if method == CPU_METHOD:
        from explainers.attribution.group_shapley import shapley_attribution

        names, groups = layout.players(len(recorded.turn.spec.tips))
        settings = {"max_evals": 64, "seed": 0, **params}
        result = shapley_attribution(
            obj, groups, {**settings, "players": names}, progress=progress, **settings
        )
        exp = explainer.explanation_of(obj, result)
    else:
        exp = explainer.explain_prepared(obj, progress=progress, **params)
    split = layout.split(np.asarray(exp.scores, dtype=np.float64).sum(axis=0))
    objective_name = getattr(obj, "kind", "logprob")
    value = float(obj.row_values().sum())
    rechosen, ablated = _ablate(recorded, objective_name)
    tips = []
    for i, tip in enumerate(recorded.turn.spec.tips):
        new_action, without = ablated[i]
        effect = value - without
        mass = split.tip_masses[i]
        tips.append(
            {
                "tip": tip,
                "mass": mass,
                "effect": effect,
                "action_changed": new_action != rechosen,
                "new_action": new_action,
                "disagrees": mass * effect < 0 and min(abs(mass), abs(effect)) > DISAGREEMENT,
            }
        )
    total = float(split.masses.sum())
    reproduced = rechosen == recorded.action
    check = _check(exp)
    exp.extras["token_segments"] = split.token_segments
    exp.extras["token_tips"] = split.token_tips
    if exp.input_text == text:
        # Where each token sits in the text: heatmaps show the prompt's own characters
        # (spaces, line breaks) even where a tokenizer's decoding drops them.
        exp.extras["token_offsets"] = layout.offsets
    recorded.save_explanation(
        store,
        exp,
        total=total,
        segments=split.segments,
        tips=tips,
        params={
            **exp.params,
            "reproduced": reproduced,
            "objective": objective_name,
            "value": value,
            "check": check,
        },
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
        objective=objective_name,
        value=value,
        check=check,
        prompt=recorded.prompt,
        spans=split.spans,
        reproduced=reproduced,
        explanation=exp,
    )


def _check(exp: Explanation) -> dict[str, Any]:
    """How far the masses can be trusted: exact (Shapley values: they add up to the
    objective's change by construction; sampled ones carry standard errors) or IG's
    completeness (expected change, delta, status, knots)."""
    check: dict[str, Any] = {"status": exp.status}
    if exp.expected is not None:
        check["expected"] = float(sum(exp.expected))
    if exp.delta is not None:
        check["delta"] = float(sum(exp.delta))
    for key in ("knots", "steps", "exact", "evaluations", "n_samples"):
        if key in exp.params:
            check[key] = exp.params[key]
    if "group_stderr" in exp.extras:
        check["stderr"] = exp.extras["group_stderr"]
    return check


# -- the prompt's segments, token by token ---------------------------------------------------


@dataclass
class _SegmentSplit:
    """An explanation's per-token masses (summed over the target's rows), and how they fall
    into the prompt's segments and tips."""

    masses: np.ndarray  # [input tokens]
    segments: dict[str, float]
    token_segments: list[str]
    token_tips: list[int | None]  # the tip of each token inside the tips segment
    tip_masses: list[float]
    tip_scaffold: float
    spans: dict[str, list[tuple[int, int]]]  # segment -> its fields' spans in the prompt


@dataclass
class StepLayout:
    """The segment (and tip) of every input token of a step's prompt."""

    token_segments: list[str]
    token_tips: list[int | None]
    special: list[bool]
    spans: dict[str, list[tuple[int, int]]]
    segment_names: list[str]  # the segments this prompt reports, in order
    offsets: list[list[int]]
    n_tips: int

    def players(self, n_tips: int) -> tuple[list[str], list[np.ndarray]]:
        """The Shapley players: each tip, then each segment but the instructions (the
        template's frame and the chat scaffold stay in view) and the tips' scaffold."""
        names, groups = [], []
        for i in range(n_tips):
            names.append(f"tip {i + 1}")
            groups.append(self._positions(lambda s, t, i=i: t == i))
        for name in self.segment_names:
            if name not in ("instructions", "tips"):
                names.append(name)
                groups.append(self._positions(lambda s, t, name=name: s == name))
        kept = [(n, g) for n, g in zip(names, groups) if len(g)]
        return [n for n, _ in kept], [g for _, g in kept]

    def positions_of(self, segment: str) -> np.ndarray:
        """The positions of a segment's tokens (special tokens left out)."""
        return self._positions(lambda s, t: s == segment)

    def _positions(self, belongs) -> np.ndarray:
        return np.array(
            [
                i
                for i, (s, t, special) in enumerate(
                    zip(self.token_segments, self.token_tips, self.special)
                )
                if not special and belongs(s, t)
            ],
            dtype=np.int64,
        )

    def split(self, masses: np.ndarray) -> _SegmentSplit:
        segments = {name: 0.0 for name in self.segment_names}
        for name, mass in zip(self.token_segments, masses):
            segments[name] = segments.get(name, 0.0) + float(mass)
        tip_mass = [0.0] * self.n_tips
        scaffold = 0.0
        for segment, tip, mass in zip(self.token_segments, self.token_tips, masses):
            if tip is not None:
                tip_mass[tip] += float(mass)
            elif segment == "tips":
                scaffold += float(mass)
        return _SegmentSplit(
            masses=masses,
            segments=segments,
            token_segments=self.token_segments,
            token_tips=self.token_tips,
            tip_masses=tip_mass,
            tip_scaffold=scaffold,
            spans=self.spans,
        )


def step_layout(lm: LoadedModel, recorded: RecordedStep, text: str, offset: int) -> StepLayout:
    """Each input token's segment and tip. `text` is the model's input (the prompt inside
    the chat template), the prompt starting at `offset`."""
    agent, turn = recorded.agent, recorded.turn
    values = field_values(agent, turn)
    spans = field_spans(agent.template, values)
    regions = [(offset + s, offset + e, FIELD_SEGMENT[name]) for name, (s, e) in spans.items()]
    tip_spans = _tip_spans(values["tips"], spans.get("tips", (0, 0))[0], turn.spec.tips)
    tip_regions = [(offset + s, offset + e, f"tip:{i}") for i, (s, e) in enumerate(tip_spans)]
    recipe = [(m.start(), m.end()) for m in RECIPE.finditer(recorded.prompt)]
    enc = _encoding(lm, text)
    token_segment = _token_segments(enc["offset_mapping"], regions)
    token_tip = _token_segments(enc["offset_mapping"], tip_regions)
    # The recipe is a segment of its own wherever it appears (inside the observation or
    # the history), so a token that overlaps it goes to the recipe.
    recipe_regions = [(offset + s, offset + e, "recipe") for s, e in recipe]
    for i, in_recipe in enumerate(_token_segments(enc["offset_mapping"], recipe_regions)):
        if in_recipe == "recipe":
            token_segment[i] = "recipe"
    # A token counts for a tip only inside the tips segment, so that the tips' masses and
    # the scaffold partition that segment (a token straddling a tip's edge and the next
    # field goes where its segment is).
    tip_of = [
        int(tip[4:]) if segment == "tips" and tip.startswith("tip:") else None
        for segment, tip in zip(token_segment, token_tip)
    ]
    names = list(SEGMENTS)
    if any(FIELD_SEGMENT[n] == "example" and e > s for n, (s, e) in spans.items()):
        names.insert(names.index("history"), "example")
    span_map = {
        seg: [(s, e) for n, (s, e) in spans.items() if FIELD_SEGMENT[n] == seg and e > s]
        for seg in {*SEGMENTS, "example"}
    }
    span_map["recipe"] = recipe
    special_ids = set(lm.tokenizer.all_special_ids)
    return StepLayout(
        token_segments=token_segment,
        token_tips=tip_of,
        special=[i in special_ids for i in enc["input_ids"]],
        spans=span_map,
        segment_names=names,
        offsets=[[int(a), int(b)] for a, b in enc["offset_mapping"]],
        n_tips=len(turn.spec.tips),
    )


def _encoding(lm: LoadedModel, text: str) -> dict[str, Any]:
    tok = lm.tokenizer
    if not getattr(tok, "is_fast", False):
        raise WorkbenchError("explain-step needs a fast tokenizer (character offsets)")
    enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
    expected = tok(text, add_special_tokens=True)["input_ids"]
    if enc["input_ids"] != expected:
        raise WorkbenchError("the tokenizer's offsets do not line up with the prompt's tokens")
    return enc


def _token_segments(
    offsets: list[tuple[int, int]], regions: list[tuple[int, int, str]]
) -> list[str]:
    """The segment of each input token: the region its characters overlap most (tokens of
    the chat scaffold and of the template's own text fall outside every region)."""
    out = []
    for start, end in offsets:
        best, best_overlap = "instructions", 0
        for r_start, r_end, name in regions:
            overlap = min(end, r_end) - max(start, r_start)
            if overlap > best_overlap:
                best, best_overlap = name, overlap
        out.append(best)
    return out


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


# -- tip ablation ----------------------------------------------------------------------------


def _ablate(recorded: RecordedStep, objective: str) -> tuple[str, list[tuple[str, float]]]:
    """The command the agent chooses with all tips, and, with each tip removed in turn, the
    command it chooses and the objective's value (all in one batch)."""
    agent, turn, action = recorded.agent, recorded.turn, recorded.action
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
    if agent.select == "choose":
        rankings = agent.rank(turns)
        actions = [r.candidates[r.best] for r in rankings]
        values = [
            _objective_value(r.candidates, r.scores, r.raw.logprobs, action, objective)
            for r in rankings
        ]
    else:
        actions = [d.action for d in agent.act(turns)]
        prompts = [agent.prompt(t) for t in turns]
        values = [s.logprobs[0] for s in agent.llm.score(prompts, [[action]] * len(turns))]
    return actions[0], list(zip(actions[1:], values[1:]))


def _objective_value(
    cands: list[str], scores: list[float], logprobs: list[float], action: str, objective: str
) -> float:
    """The objective of choosing `action` from the agent's ranking scores."""
    k = cands.index(action)
    if objective == "logprob":
        return float(logprobs[k])
    a = np.asarray(scores, dtype=np.float64)
    if objective == "choice":
        return float(a[k] - np.logaddexp.reduce(a))
    return float(a[k] - np.delete(a, k).max())
