"""Exact activation patching (Vig et al. 2020; Meng et al. 2022; the TransformerLens
`patching` module): run the model on a corrupted input, put back one activation from the
clean run, and see how much of the clean behaviour returns.

Components: `resid` (the residual stream entering each block, layer 0 = the embeddings,
L = after the last block), `attn` and `mlp` (what each block's attention or MLP adds to the
stream), per prompt position; `head` (one attention head's output at every position).
Directions: `denoise` patches clean activations into the corrupted run (which activations
suffice to restore the behaviour?), `noise` patches corrupted ones into the clean run (which
are necessary?). Either way a cell is the normalised restoration
(value - corrupted) / (clean - corrupted): 0 = the corrupted run's value, 1 = the clean's.

The value is log p(target) summed over the target's tokens, or with a contrast the logit
difference target - contrast (for a classifier: the label's log-probability, or the
difference of two labels' logits).

All patched runs of one request go through `engine.Patcher` in batches; the clean and
corrupted activations are cached once.

    >>> from explainers import explain                                   # doctest: +SKIP
    >>> exp = explain(lm, "The key is under the mat. The key is under the", target=" mat",
    ...               method="activation_patching",
    ...               corrupt="The key is under the rug. The key is under the")
    >>> exp.scores.shape            # (layers 0 .. L, prompt positions)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explainers.base import (
    Explainer,
    choice_param,
    int_param,
    optional_int_param,
    register,
)
from explainers.causal.engine import ENGINES, Patch, Patcher, Progress, Readout, capture
from explainers.causal.engine import forward_logits as _forward_logits
from explainers.causal.hooks import COMPONENTS, ModelHooks, model_hooks
from explainers.causal.result import PatchingExplanation
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

DIRECTIONS = ("denoise", "noise")
MIN_EFFECT = 1e-6  # |clean - corrupted| below this: there is nothing to restore
SMALL_EFFECT = 0.1  # below this (nats), restoration is a ratio of small numbers
LOW_PRECISION_EFFECT = 2.0  # below this, bf16/fp16 rounding shows in the restoration


@dataclass
class PatchingSetup:
    """A clean and a corrupted run, and what they are scored by.

    `clean` and `corrupt` are input embeddings [n, D]: the prompt followed, for a causal LM,
    by the target's tokens but the last (teacher forcing). Only the first `n_prompt`
    positions of the clean run are prompt positions (the heatmap's columns).
    `corrupt_to_clean` pairs positions when the two differ in length (each corrupted
    position's clean position, -1 for none); None means equal lengths, position by position.
    """

    lm: LoadedModel
    hooks: ModelHooks
    readout: Readout
    clean: torch.Tensor
    corrupt: torch.Tensor
    n_prompt: int
    input_tokens: list[str]
    corrupt_tokens: list[str]
    corrupt_to_clean: list[int] | None = None

    def value(self, embeds: torch.Tensor) -> float:
        logits = _forward_logits(self.lm, embeds.unsqueeze(0), self.readout.rows)
        return float(self.readout.values(logits)[0])

    def clean_to_corrupt(self) -> list[int]:
        """Each clean position's corrupted position (-1 for none)."""
        if self.corrupt_to_clean is None:
            return list(range(self.clean.shape[0]))
        out = [-1] * self.clean.shape[0]
        for q, p in enumerate(self.corrupt_to_clean):
            if p >= 0:
                out[p] = q
        return out


def align(clean_ids: Sequence[int], corrupt_ids: Sequence[int]) -> list[int] | None:
    """Pair the positions of two token sequences: None if equally long (position by
    position); else the common prefix pairs from the start and the common suffix from the
    end, and the edited tokens between have no partner (-1)."""
    n_c, n_k = len(clean_ids), len(corrupt_ids)
    if n_c == n_k:
        return None
    limit = min(n_c, n_k)
    prefix = 0
    while prefix < limit and clean_ids[prefix] == corrupt_ids[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and clean_ids[n_c - 1 - suffix] == corrupt_ids[n_k - 1 - suffix]:
        suffix += 1
    return [q if q < prefix else (q + n_c - n_k if q >= n_k - suffix else -1) for q in range(n_k)]


def setup_from_ids(
    lm: LoadedModel,
    clean_ids: Sequence[int],
    corrupt_ids: Sequence[int],
    readout: Readout,
    *,
    allow_lengths: bool = False,
) -> PatchingSetup:
    """Set up patching of two prompts given as token ids. They must be equally long unless
    `allow_lengths`, which pairs the positions around the edit (`align`)."""
    if len(clean_ids) != len(corrupt_ids) and not allow_lengths:
        raise WorkbenchError(
            f"the clean and corrupted inputs tokenize to different lengths ({len(clean_ids)} "
            f"vs {len(corrupt_ids)} tokens); patching pairs positions, so make them equal"
        )
    hooks = model_hooks(lm)
    tail: list[int] = []
    if lm.kind == "causal":
        tail = readout.target_ids[:-1].tolist()
    with torch.no_grad():
        embed = lm.embeddings
        clean = embed(torch.tensor([*clean_ids, *tail], device=lm.device))
        corrupt = embed(torch.tensor([*corrupt_ids, *tail], device=lm.device))
    decode = lm.tokenizer.decode
    return PatchingSetup(
        lm=lm,
        hooks=hooks,
        readout=readout,
        clean=clean,
        corrupt=corrupt,
        n_prompt=len(clean_ids),
        input_tokens=[decode([i]) for i in clean_ids],
        corrupt_tokens=[decode([i]) for i in corrupt_ids],
        corrupt_to_clean=align([*clean_ids, *tail], [*corrupt_ids, *tail]),
    )


def readout_for(obj: Any) -> Readout:
    """The readout of an `Objective` (its target, contrast or label)."""
    if obj.lm.kind == "classifier":
        return Readout(torch.tensor([obj.label]), obj.contrast_ids)
    return Readout(obj.target_ids, obj.contrast_ids)


def check_layers(hooks: ModelHooks, component: str, layers: Sequence[int] | None) -> list[int]:
    """The component's layers to patch (all by default); negative numbers count from the end."""
    valid = hooks.layers(component)
    if layers is None:
        return valid
    out = []
    for layer in layers:
        if not -len(valid) <= int(layer) < len(valid):
            raise WorkbenchError(
                f"layer {layer} is out of range: {component} has layers 0 .. {valid[-1]}"
                + (
                    " (0 = embeddings, the last = after the last block)"
                    if component == "resid"
                    else ""
                )
            )
        out.append(int(layer) % len(valid))
    return sorted(set(out))


def parse_int_list(name: str, value: Any) -> list[int] | None:
    """`"0,2,5-7"`, a list of ints, or None/"all" -> ints (ranges inclusive)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        out: list[int] = []
        for item in value.split(","):
            item = item.strip()
            low, sep, high = item[1:].partition("-")
            try:
                if sep:
                    out.extend(range(int(item[0] + low), int(high) + 1))
                else:
                    out.append(int(item))
            except ValueError:
                raise WorkbenchError(
                    f"{name} takes numbers and ranges like 0,2,5-7; not {item!r}"
                ) from None
        return out
    try:
        return [int_param(name, v, None) for v in value]
    except TypeError:
        raise WorkbenchError(f"{name} must be a list of integers, not {value!r}") from None


@dataclass
class Sweep:
    """What one sweep computed: restoration [layers, columns] and the raw values."""

    scores: np.ndarray
    values: np.ndarray
    layers: list[int]
    positions: list[int]
    hook_names: list[str]
    clean_value: float
    corrupt_value: float
    warnings: list[str]


def normalise(values: np.ndarray, clean: float, corrupt: float) -> np.ndarray:
    """(value - corrupted) / (clean - corrupted): 0 = corrupted, 1 = clean."""
    effect = clean - corrupt
    if abs(effect) < MIN_EFFECT:
        raise WorkbenchError(
            f"the clean and corrupted runs score the same ({clean:+.6f}): there is nothing to "
            "restore; corrupt a part of the input that changes the target's probability"
        )
    return (values - corrupt) / effect


def effect_warnings(clean: float, corrupt: float, dtype: torch.dtype) -> list[str]:
    """Warnings about a clean-corrupted difference too small to divide by."""
    effect = clean - corrupt
    out = []
    if abs(effect) < SMALL_EFFECT:
        out.append(
            f"the corruption changes the metric by only {effect:+.4f}; restoration is a ratio "
            "of small numbers"
        )
    if dtype != torch.float32 and abs(effect) < LOW_PRECISION_EFFECT:
        out.append(
            f"the model runs in {str(dtype).removeprefix('torch.')}, whose rounding moves "
            f"patched values by up to ~0.1; against a difference of {effect:+.3f} that is "
            "visible in the scores (use --dtype float32)"
        )
    return out


def patch_rows(
    hooks: ModelHooks, component: str, layers: list[int], positions: list[int]
) -> list[list[Patch]]:
    """One patched run per (layer, position), or per (layer, head) for `head`."""
    if component == "head":
        return [
            [Patch(hooks.name("head", layer), None, h)]
            for layer in layers
            for h in range(hooks.n_heads or 0)
        ]
    return [[Patch(hooks.name(component, layer), p)] for layer in layers for p in positions]


def exact_patching(
    setup: PatchingSetup,
    component: str = "resid",
    direction: str = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    *,
    batch_size: int | None = None,
    engine: str = "auto",
    progress: Progress | None = None,
    token_budget: int | None = None,
) -> Sweep:
    """Patch every (layer, prompt position) of `component` (or every head), batched.

    Args:
        setup: the clean and corrupted runs (`setup_from_ids`).
        component: resid, attn, mlp or head.
        direction: denoise (clean activations into the corrupted run) or noise (corrupted
            into the clean run).
        layers: the layers to patch (all by default).
        positions: the prompt positions to patch (all by default; ignored for head).
        batch_size: patched runs per forward (default: from `token_budget`).
        engine / token_budget: see `engine.Patcher`.
    """
    hooks = setup.hooks
    hooks.check(component)
    direction = choice_param("direction", direction, DIRECTIONS)
    layer_list = check_layers(hooks, component, layers)
    pos_list = list(range(setup.n_prompt)) if positions is None else list(positions)
    for p in pos_list:
        if not 0 <= p < setup.n_prompt:
            raise WorkbenchError(f"position {p} is outside the prompt (0 .. {setup.n_prompt - 1})")
    clean_value, corrupt_value = setup.value(setup.clean), setup.value(setup.corrupt)
    names = [hooks.name(component, layer) for layer in layer_list]
    if direction == "denoise":
        base, source, base_of = setup.corrupt, setup.clean, setup.clean_to_corrupt()
        source_of = setup.corrupt_to_clean
    else:
        base, source, base_of = setup.clean, setup.corrupt, list(range(setup.clean.shape[0]))
        source_of = None if setup.corrupt_to_clean is None else setup.clean_to_corrupt()
    if setup.corrupt_to_clean is not None:
        if component == "head":
            raise WorkbenchError("head patching needs clean and corrupted inputs of one length")
        unpaired = [p for p in pos_list if base_of[p] < 0]
        if unpaired and positions is not None:
            raise WorkbenchError(
                f"position {unpaired[0]} was edited into a different number of tokens; it has "
                "no partner in the corrupted input to patch"
            )
        pos_list = [p for p in pos_list if base_of[p] >= 0]
    acts, _ = capture(setup.lm, hooks, source, names, setup.readout.rows)
    if source_of is not None:
        index = torch.tensor([max(i, 0) for i in source_of])
        acts = {name: a[index.to(a.device)] for name, a in acts.items()}
    patcher = Patcher(setup.lm, hooks, setup.readout, base, acts, engine, batch_size, token_budget)
    rows = patch_rows(hooks, component, layer_list, [base_of[p] for p in pos_list])
    values = patcher.values(rows, progress).reshape(len(layer_list), -1)
    return Sweep(
        scores=normalise(values, clean_value, corrupt_value),
        values=values,
        layers=layer_list,
        positions=[] if component == "head" else pos_list,
        hook_names=names,
        clean_value=clean_value,
        corrupt_value=corrupt_value,
        warnings=effect_warnings(clean_value, corrupt_value, setup.lm.dtype),
    )


def to_explanation(
    method: str,
    obj: Any,
    setup: PatchingSetup,
    sweep: Sweep,
    component: str,
    direction: str,
    params: dict[str, Any],
    corrupt_text: str | None,
    extras: dict[str, Any] | None = None,
) -> PatchingExplanation:
    """The explanation record of a sweep (shared by the three causal methods)."""
    lm = setup.lm
    info: dict[str, Any] = {"values": sweep.values.tolist(), **(extras or {})}
    if lm.kind == "causal":
        info["target_ids"] = setup.readout.target_ids.tolist()
    if setup.readout.contrast_ids is not None:
        ids = setup.readout.contrast_ids.tolist()
        info["contrast_ids"] = ids
        info["contrast_tokens"] = (
            [lm.labels[i] for i in ids]
            if lm.kind == "classifier"
            else [lm.tokenizer.decode([i]) for i in ids]
        )
    exp = PatchingExplanation(
        method=method,
        category="causal",
        model=lm.name,
        input_text=obj.text if obj is not None else "",
        input_tokens=setup.input_tokens,
        target_tokens=list(obj.target_tokens) if obj is not None else [],
        scores=sweep.scores,
        params={"component": component, "direction": direction, **params},
        extras=info,
        component=component,
        layers=sweep.layers,
        hook_names=sweep.hook_names,
        positions=sweep.positions,
        clean_value=sweep.clean_value,
        corrupt_value=sweep.corrupt_value,
        metric=setup.readout.metric,
        direction=direction,
        corrupt_text=corrupt_text,
        corrupt_tokens=setup.corrupt_tokens,
    )
    for warning in sweep.warnings:
        exp.warn(warning)
    return exp


class CausalExplainer(Explainer):
    """What the causal methods share: a contrast is a second target (or label), and their
    parameters are checked here without a model."""

    category = "causal"
    takes_contrast = True
    reports_progress = True

    def resolve_target(self, model, text, target=None, *, generate=None, contrast=None):
        if model.kind == "classifier" and contrast is not None:
            from explainers.attribution.objective import _resolve_label

            obj = super().resolve_target(model, text, target, generate=generate)
            obj.contrast_ids = torch.tensor([_resolve_label(model, contrast, obj)])
            return obj
        return super().resolve_target(model, text, target, generate=generate, contrast=contrast)

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        params = super().check_params(params)
        if "component" in params:
            params["component"] = choice_param("component", params["component"], COMPONENTS)
        if "direction" in params:
            params["direction"] = choice_param("direction", params["direction"], DIRECTIONS)
        if "engine" in params:
            params["engine"] = choice_param("engine", params["engine"], ENGINES)
        if "layers" in params:
            params["layers"] = parse_int_list("layers", params["layers"])
        if "batch_size" in params:
            params["batch_size"] = optional_int_param("batch_size", params["batch_size"])
        return params

    def corrupted_setup(self, obj: Any, corrupt: str | None) -> PatchingSetup:
        if corrupt is None or not str(corrupt).strip():
            raise WorkbenchError(f"{self.name} needs corrupt: the corrupted input text")
        ids = obj.lm.tokenizer(str(corrupt), add_special_tokens=True)["input_ids"]
        return setup_from_ids(obj.lm, obj.prompt_ids.tolist(), ids, readout_for(obj))


@register
class ActivationPatching(CausalExplainer):
    name = "activation_patching"
    summary = "exact activation patching: restoration per layer and position (or head)"

    def explain_objective(
        self,
        obj: Any,
        corrupt: str | None = None,
        component: str = "resid",
        direction: str = "denoise",
        layers: list[int] | None = None,
        batch_size: int | None = None,
        engine: str = "auto",
        progress: Progress | None = None,
    ) -> PatchingExplanation:
        setup = self.corrupted_setup(obj, corrupt)
        sweep = exact_patching(
            setup,
            component,
            direction,
            layers,
            batch_size=batch_size,
            engine=engine,
            progress=progress,
        )
        params = {"estimate": "exact", "engine": engine}
        return to_explanation(self.name, obj, setup, sweep, component, direction, params, corrupt)
