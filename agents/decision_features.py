"""Explanation features of every LLM decision of a run: what `workbench mistakes --predict`
reads to ask whether explanations carry information about mistakes beyond the model's own
confidence.

Per recorded step that ranked candidates (`agents.explain_step` rebuilds its prompt and its
choice objective, log p(chosen | candidates)):

- **Segment masses** of the choice objective. By default leave-one-out over the prompt's
  segments (`occlusion`: v(all) - v(without the segment), the tips as one segment): n + 1
  deletions, run as one batch from where each leaves the prompt, over the prompt's cache
  (explainers/attribution/group_shapley.py). That is what lets 300 decisions run in under
  half an hour on a 2-core CPU. `segment_shapley` gives exact Shapley values instead, and
  `ig` (where a GPU is at hand) token-level integrated gradients summed per segment.
- **Margin and entropy**: the chosen command's score over the runner-up's, and the entropy
  of the choice distribution over the candidates: the model's own confidence, the
  predictor's baseline.
- **Attention at the decision**: after OPERA (Huang et al., CVPR 2024), which found that
  attention piling onto a few "summary" tokens (line breaks, punctuation) in the last
  layers predicts hallucination: the share of the last quarter of layers' attention, from
  the decision's position, that lands on summary tokens (`attention_summary`), and the
  largest share on any one of them (`attention_peak`). The first position and special
  tokens (attention sinks in every prompt) are left out.
- **Probe confidence** for the fact the optimal command depends on: NaN here (the
  workbench's probes are trained per model on probing prompts, not stored per fact for an
  agent's run); the predictor drops an all-NaN column.

Features are stored per step (`decision_features`), so a run is computed once, resumes
where it stopped, and splits over GPUs with `--gpus N` (torchrun, `distributed.run_resumable`).
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from agents.explain_step import step_layout, step_objective
from agents.recorded_step import RecordedStep, record_model, recorded_step
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store, runs
from workbench.store import features as features_store
from workbench.store import play as play_store

if TYPE_CHECKING:
    import pandas as pd

FEATURE_METHODS = ("occlusion", "segment_shapley", "ig")
FEATURE_SEGMENTS = ("tips", "history", "observation", "inventory", "recipe", "admissible")
SUMMARY_CHARACTERS = set(string.punctuation) | set(string.whitespace)


def check_method(method: str) -> None:
    if method not in FEATURE_METHODS:
        raise WorkbenchError(f"feature method must be {', '.join(FEATURE_METHODS)}, not {method!r}")


@dataclass
class DecisionSpec:
    """A recorded decision as plain data, so that any rank can compute its features: the
    model's input text, the candidates and the chosen one, the agent's score adjustment,
    and the prompt positions of each segment (the tips as one)."""

    episode_id: str
    step: int
    text: str
    candidates: list[str]
    chosen: str
    score_mode: str  # "sum" or "mean" (calibrated scores come in as offsets)
    offsets: list[float]
    names: list[str]
    groups: list[list[int]]


def decision_spec(lm: LoadedModel, recorded: RecordedStep) -> DecisionSpec:
    """The decision of `recorded` as plain data (see `DecisionSpec`)."""
    text = recorded.agent.llm.format_prompt(recorded.prompt)
    offset = text.find(recorded.prompt)
    if offset < 0:
        raise WorkbenchError("the chat template changes the prompt's text; cannot map segments")
    obj = step_objective(lm, recorded, text, "choice")
    layout = step_layout(lm, recorded, text, offset)
    names, groups = layout.players(0)  # the segments but the tips
    tips = layout.positions_of("tips")
    if len(tips):
        names, groups = ["tips", *names], [tips, *groups]
    return DecisionSpec(
        episode_id=recorded.episode_id,
        step=recorded.step,
        text=text,
        candidates=list(obj.candidates),
        chosen=obj.candidates[obj.chosen],
        score_mode="mean" if recorded.agent.score_mode == "mean" else "sum",
        offsets=[] if obj.offsets is None else obj.offsets.tolist(),
        names=names,
        groups=[g.tolist() for g in groups],
    )


def decision_features(
    lm: LoadedModel, spec: DecisionSpec, method: str = "occlusion"
) -> dict[str, float]:
    """The explanation features of one decision (see the module)."""
    from explainers.attribution.group_shapley import coalition_values, group_shapley
    from explainers.choice import prepare_choice

    check_method(method)
    obj = prepare_choice(
        lm,
        spec.text,
        spec.candidates,
        spec.chosen,
        score_mode=spec.score_mode,
        offsets=spec.offsets or None,
    )
    groups = [np.asarray(g, dtype=np.int64) for g in spec.groups]
    if method == "occlusion":
        n = len(groups)
        coalitions = np.ones((n + 1, n), dtype=bool)
        coalitions[np.arange(1, n + 1), np.arange(n)] = False
        values = coalition_values(obj, groups, coalitions)
        masses = [float(values[0] - values[i + 1]) for i in range(n)]
    elif method == "segment_shapley":
        masses = [float(v) for v in group_shapley(obj, groups).values]
    else:
        from explainers import get_method

        exp = get_method("ig").explain_prepared(obj, steps="auto")
        tokens = np.asarray(exp.scores, dtype=np.float64).sum(axis=0)
        masses = [float(tokens[g].sum()) for g in groups]
    by_name = dict(zip(spec.names, masses))
    with torch.no_grad():
        scores = obj.candidate_scores(obj.input_embeddings.unsqueeze(0))[0].double().cpu()
    logp = torch.log_softmax(scores, dim=0)
    others = torch.cat([scores[: obj.chosen], scores[obj.chosen + 1 :]])
    return {
        "choice": float(logp[obj.chosen]),
        "margin": float(scores[obj.chosen] - others.max()),
        "entropy": float(-(logp.exp() * logp).sum()),
        "n_candidates": float(len(obj.candidates)),
        "prompt_tokens": float(obj.prompt_ids.numel()),
        **{f"seg_{name}": by_name.get(name, 0.0) for name in FEATURE_SEGMENTS},
        **attention_summary(lm, obj.prompt_ids),
        "probe_confidence": math.nan,
    }


def attention_summary(lm: LoadedModel, prompt_ids: torch.Tensor) -> dict[str, float]:
    """OPERA's signal at the decision: the share of the last quarter of layers' attention
    (heads averaged) from the prompt's last position that lands on summary tokens (line
    breaks, punctuation), and the largest share on one of them."""
    from explainers.attention.base import eager_attention

    with eager_attention(lm), torch.no_grad():
        out = lm.model(prompt_ids.unsqueeze(0).to(lm.device), output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise WorkbenchError(f"model {lm.name!r} returned no attention weights")
    last = max(1, len(attentions) // 4)
    rows = torch.stack([a[0, :, -1, :].float() for a in attentions[-last:]])  # [L, H, P]
    share = rows.mean(dim=(0, 1)).cpu().numpy()
    ids = prompt_ids.tolist()
    special = set(lm.tokenizer.all_special_ids)
    pieces = lm.tokenizer.convert_ids_to_tokens(ids)
    texts = [lm.tokenizer.convert_tokens_to_string([p]) for p in pieces]
    valid = np.array([i > 0 and t not in special for i, t in enumerate(ids)])
    summary = valid & np.array([bool(x) and set(x) <= SUMMARY_CHARACTERS for x in texts])
    total = float(share[valid].sum()) or 1.0
    return {
        "attention_summary": float(share[summary].sum() / total),
        "attention_peak": float(share[summary].max() / total) if summary.any() else 0.0,
    }


# -- a whole run ------------------------------------------------------------------------------


@dataclass
class FeatureRun:
    """What `compute_run_features` did: decisions computed now and found stored."""

    run_name: str
    method: str
    computed: int
    stored: int


def decisions(store: Store, run: str) -> list[tuple[str, int]]:
    """(episode id, step) of every decision of the run that ranked candidates."""
    record = runs.require_run(store, run, kind="play")
    params = record["params"] or {}
    if params.get("agent", "llm") != "llm":
        raise WorkbenchError(f"run {record['name']!r} has no llm decisions to explain")
    if params.get("select", "choose") != "choose":
        raise WorkbenchError(
            f"run {record['name']!r} generated its commands: there is no choice among "
            "candidates to explain (features need select choose)"
        )
    out = []
    for episode in play_store.list_episodes(store, record["id"]):
        for row in play_store.get_steps(store, episode["id"]):
            if row.get("prompt"):
                out.append((episode["id"], int(row["idx"])))
    if not out:
        raise WorkbenchError(f"run {record['name']!r} has no llm steps")
    return out


def compute_run_features(
    store: Store | None,
    run: str,
    *,
    lm: LoadedModel | None = None,
    method: str = "occlusion",
    device: str = "auto",
    dtype: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> FeatureRun:
    """Features of every decision of `run` not stored yet (a stopped job resumes), saved
    in chunks. Under torchrun (`--gpus N`) the decisions split over the ranks; rank 0 (the
    one with a `store`) saves."""
    from workbench import distributed

    check_method(method)
    # Rank 0 reads the store (the one process that may open it): the run and its decisions
    # are checked before any model loads.
    record, keys = distributed.broadcast(
        (runs.require_run(store, run, kind="play"), decisions(store, run))
        if store is not None
        else None
    )
    if lm is None:
        lm = record_model(record, device=device, dtype=dtype, progress=True)
    if store is not None:
        have = {
            (r["episode_id"], int(r["step_idx"]))
            for r in features_store.list_decision_features(store, record["id"], method)
        }
        # Every rank gets the decisions as plain data.
        specs = [
            None if key in have else decision_spec(lm, recorded_step(store, run, *key, lm))
            for key in keys
        ]
        shared = (specs, sorted(i for i, k in enumerate(keys) if k in have))
    else:
        shared = None
    specs, stored = distributed.broadcast(shared)
    model = lm.identity.to_dict()
    done = [len(stored)]

    def compute(chunk: list[DecisionSpec]) -> list[dict[str, float]]:
        return [decision_features(lm, spec, method) for spec in chunk]

    def save(indices: list[int], results: list[dict[str, float]]) -> None:
        rows = [
            {"episode_id": keys[i][0], "step_idx": keys[i][1], "model": model, "features": f}
            for i, f in zip(indices, results)
        ]
        features_store.save_decision_features(store, method, rows)

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], len(keys))

    indices, _ = distributed.run_resumable(
        specs,
        compute,
        stored=lambda: stored,
        save=save if store is not None else None,
        chunk_size=16,
        on_chunk=advance,
    )
    return FeatureRun(record["name"], method, len(indices), len(stored))


def feature_frame(store: Store, run: str, method: str = "occlusion") -> pd.DataFrame:
    """One row per judged decision with stored features: ids, the mistake verdict and the
    features (see the module), for `agents.mistake_prediction`."""
    import pandas as pd

    from workbench.store import mistakes as mistakes_store

    record = runs.require_run(store, run, kind="play")
    verdicts = {
        (r["episode_id"], int(r["step"])): r
        for r in mistakes_store.list_step_mistakes(store, record["id"])
    }
    rows = []
    for r in features_store.list_decision_features(store, record["id"], method):
        verdict = verdicts.get((r["episode_id"], int(r["step_idx"])))
        if verdict is None:
            continue
        features = {k: (math.nan if v is None else float(v)) for k, v in r["features"].items()}
        rows.append(
            {
                "episode_id": r["episode_id"],
                "game_id": r["game_id"],
                "level": r["level"],
                "step": int(r["step_idx"]),
                "mistake": bool(verdict["mistake"]),
                "regret": verdict["regret"],
                "lost": bool(verdict["lost"]),
                **features,
            }
        )
    if not rows:
        raise WorkbenchError(
            f"run {record['name']!r} has no judged decisions with {method} features; "
            "compute them first (compute_run_features)"
        )
    return pd.DataFrame(rows)
