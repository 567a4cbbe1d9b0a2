"""The patching computation: a clean and a corrupted run (`PatchingSetup`), and a sweep
that patches every (layer, prompt position) or head and measures how much of the clean
behaviour returns (`exact_patching` -> `Sweep`). The methods built on it (activation
patching, attribution patching, causal tracing, step patching) turn a sweep into an
explanation with `explainers.causal.patching.to_explanation`.

A cell is the normalised restoration (value - corrupted) / (clean - corrupted): 0 = the
corrupted run's value, 1 = the clean's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explainers.causal.engine import Patch, Patcher, Progress, Readout
from explainers.params import choice_param
from workbench.anatomy import Anatomy, capture, model_anatomy
from workbench.anatomy import forward_logits as _forward_logits
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
    hooks: Anatomy
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
    hooks = model_anatomy(lm)
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

    @classmethod
    def measured(
        cls,
        setup: PatchingSetup,
        values: np.ndarray,
        layers: list[int],
        positions: list[int],
        hook_names: list[str],
        clean_value: float,
        corrupt_value: float,
    ) -> Sweep:
        """The sweep of patched `values` [layers, columns]: normalised between the clean and
        the corrupted run's values, with the warnings their difference calls for."""
        return cls(
            scores=normalise(values, clean_value, corrupt_value),
            values=values,
            layers=layers,
            positions=positions,
            hook_names=hook_names,
            clean_value=clean_value,
            corrupt_value=corrupt_value,
            warnings=effect_warnings(clean_value, corrupt_value, setup.lm.dtype),
        )


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
            "visible in the scores (load the model with dtype float32)"
        )
    return out


def patch_rows(
    hooks: Anatomy, component: str, layers: list[int], positions: list[int]
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
    layer_list = hooks.check_layers(component, layers)
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
    captured = capture(setup.lm, names, inputs_embeds=source.unsqueeze(0)).activations
    acts = {name: act[0] for name, act in captured.items()}
    if source_of is not None:
        index = torch.tensor([max(i, 0) for i in source_of])
        acts = {name: a[index.to(a.device)] for name, a in acts.items()}
    patcher = Patcher(setup.lm, hooks, setup.readout, base, acts, engine, batch_size, token_budget)
    rows = patch_rows(hooks, component, layer_list, [base_of[p] for p in pos_list])
    values = patcher.values(rows, progress).reshape(len(layer_list), -1)
    positions = [] if component == "head" else pos_list
    return Sweep.measured(setup, values, layer_list, positions, names, clean_value, corrupt_value)
