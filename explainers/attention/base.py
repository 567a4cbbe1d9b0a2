"""Shared shape of attention methods: one forward pass with attention weights, token-to-token
maps from it, and the `Explanation` built from those maps.

Every method computes maps over the whole sequence the model reads: the prompt, then (for a
causal LM with a multi-token target) the target tokens fed teacher-forced. Row i of a map is
how much position i draws on each position j <= i. An explanation's `scores` are the rows of
the positions that predict the target tokens (one row per target token; for a classifier the
pooled position), restricted to the prompt's columns.

`Explanation.extras` keeps the maps themselves, as nested lists rounded to 5 decimals:

- `tokens`: every position's token (prompt then target prefix); `rows`: the scored positions
- `map`: the method's final n x n map (None when it was too costly, see flow)
- `layers`: one n x n map per layer (L x n x n), where the method has them
- `heads`: per layer and head (L x H x n x n), where the method has them
- `n_layers`, `n_heads`, and `omitted`: which of the above were left out to keep the record
  under `MAX_CELLS` numbers (the per-head maps go first)

Attention weights need the "eager" attention implementation: SDPA and flash kernels never
materialise them. A model loaded with another implementation is switched to eager for the
one forward pass and switched back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explainers.explainer import Explainer
from explainers.explanation import Explanation
from explainers.objective import Objective
from explainers.params import Float, Int
from workbench.anatomy import Anatomy, HookPoint, Hooks, model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

MAX_CELLS = 250_000  # numbers kept in extras; per-head maps of a 30-layer model at ~30 tokens


@dataclass
class AttentionPass:
    """One forward pass over the prompt (+ teacher-forced target prefix), with its weights.

    `attentions` is [L, H, n, n] in float32 on the CPU; `values`, when asked for, holds per
    layer the per-head transformed value vectors f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h as
    [H, n, D] (Kobayashi et al. 2020).
    """

    lm: LoadedModel
    objective: Objective
    ids: torch.Tensor  # [n]
    tokens: list[str]
    rows: list[int]
    attentions: torch.Tensor
    values: list[torch.Tensor] | None = None

    @property
    def n_layers(self) -> int:
        return int(self.attentions.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.attentions.shape[1])

    @property
    def n_prompt(self) -> int:
        return int(self.objective.prompt_ids.numel())

    def layer_index(self, layer: int) -> int:
        """A user's layer number (negative counts from the end) as an index, or an error."""
        if not -self.n_layers <= layer < self.n_layers:
            raise WorkbenchError(
                f"layer {layer} is out of range: the model has {self.n_layers} layers "
                f"(0..{self.n_layers - 1}, or negative from the end)"
            )
        return layer % self.n_layers

    def head_index(self, head: int | None) -> int | None:
        if head is not None and not 0 <= head < self.n_heads:
            raise WorkbenchError(
                f"head {head} is out of range: each layer has {self.n_heads} heads "
                f"(0..{self.n_heads - 1})"
            )
        return head


@dataclass
class AttentionMaps:
    """What a method computes: the final map and, where it has them, per-layer/head maps."""

    final: np.ndarray | None  # [n, n]
    scores: np.ndarray  # [rows, n]: the scored rows over every position
    layers: np.ndarray | None = None  # [L, n, n]
    heads: np.ndarray | None = None  # [L, H, n, n]
    params: dict[str, Any] = field(default_factory=dict)


class AttentionExplainer(Explainer):
    """An attention method: subclasses implement `attribute(obj: AttentionPass, **params)`."""

    category = "attention"
    needs_values = False  # attn_norm also needs the value vectors

    def explain_objective(self, obj: Objective, **params: Any) -> Explanation:
        attn_pass = run_with_attention(obj.lm, obj, values=self.needs_values)
        maps = self.attribute(attn_pass, **params)
        return Explanation.from_objective(
            self,
            obj,
            maps.scores[:, : attn_pass.n_prompt],
            params=maps.params,
            extras=maps_extras(attn_pass, maps),
        )

    param_checks = {
        "layer": Int(min=None),
        "head": Int(min=0, optional=True),
        "residual": Float(0.0, 1.0),
    }

    def attribute(self, obj: AttentionPass, **params: Any) -> AttentionMaps:
        raise NotImplementedError


def maps_extras(attn_pass: AttentionPass, maps: AttentionMaps) -> dict[str, Any]:
    """The maps as nested lists, dropping per-head then per-layer maps beyond MAX_CELLS."""
    omitted: list[str] = []
    n = len(attn_pass.tokens)
    budget = MAX_CELLS - (n * n if maps.final is not None else 0)
    layers, heads = maps.layers, maps.heads
    if heads is not None and heads.size > budget - (layers.size if layers is not None else 0):
        heads = None
        omitted.append("heads")
    if layers is not None and layers.size > budget:
        layers = None
        omitted.append("layers")
    return {
        "tokens": attn_pass.tokens,
        "rows": attn_pass.rows,
        "n_layers": attn_pass.n_layers,
        "n_heads": attn_pass.n_heads,
        "map": _rounded(maps.final),
        "layers": _rounded(layers),
        "heads": _rounded(heads),
        "omitted": omitted,
    }


def _rounded(array: np.ndarray | None) -> list | None:
    return None if array is None else np.round(array.astype(np.float64), 5).tolist()


def scored_rows(lm: LoadedModel, obj: Objective) -> list[int]:
    """The positions whose rows explain the targets.

    Causal LM: position P-1+r predicts target token r. Classifier: the first position when
    it is a CLS token (BERT-style pooling), else the last (decoder classifiers pool there).
    """
    n_prompt = int(obj.prompt_ids.numel())
    if lm.kind == "classifier":
        cls_id = getattr(lm.tokenizer, "cls_token_id", None)
        first = int(obj.prompt_ids[0])
        return [0] if cls_id is not None and first == cls_id else [n_prompt - 1]
    return [n_prompt - 1 + r for r in range(int(obj.target_ids.numel()))]


@contextlib.contextmanager
def eager_attention(lm: LoadedModel) -> Iterator[None]:
    """Switch the model to the eager attention implementation for the duration."""
    model = lm.model
    current = getattr(model.config, "_attn_implementation", None)
    if current in (None, "eager"):
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except Exception as exc:  # transformers raises ValueError/ImportError/NotImplementedError
        raise WorkbenchError(
            f"model {lm.name!r} uses attn_implementation={current!r}, which returns no "
            f"attention weights, and cannot be switched to 'eager' ({exc}); load it with "
            "attn_implementation='eager'"
        ) from exc
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def run_with_attention(lm: LoadedModel, obj: Objective, values: bool = False) -> AttentionPass:
    """One forward pass over prompt + target prefix that returns every layer's weights."""
    ids = obj.prompt_ids
    if obj.target_ids.numel():
        ids = torch.cat([obj.prompt_ids, obj.target_ids[:-1]])
    tokens = obj.input_tokens + obj.target_tokens[:-1] if lm.kind == "causal" else obj.input_tokens
    points = _value_points(lm) if values else []
    captured: dict[int, torch.Tensor] = {}
    with Hooks() as active, eager_attention(lm), torch.no_grad():
        for point in points:

            def keep(v: torch.Tensor, block: int = point.block) -> None:
                captured[block] = v[0].detach().float()

            active.add(point, keep)
        out = lm.model(ids.unsqueeze(0).to(lm.device), output_attentions=True)
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise WorkbenchError(
            f"model {lm.name!r} returned no attention weights; load it with "
            "attn_implementation='eager'"
        )
    stacked = torch.stack([a[0].float().cpu() for a in attentions])  # [L, H, n, n]
    value_vectors = None
    if values:
        anatomy = model_anatomy(lm)
        value_vectors = [_head_values(anatomy, p.block, captured[p.block]) for p in points]
    return AttentionPass(lm, obj, ids, tokens, scored_rows(lm, obj), stacked, value_vectors)


def _value_points(lm: LoadedModel) -> list[HookPoint]:
    """Each block's value projection output (`attn.hook_v`), or a one-line error for a model
    without separate value and output projections."""
    anatomy = model_anatomy(lm)
    try:
        anatomy.check("attn")
        return [anatomy.point(f"blocks.{b}.attn.hook_v") for b in range(anatomy.n_layers)]
    except WorkbenchError as exc:
        raise WorkbenchError(
            f"attn_norm needs separate value and output projections (Llama, Mistral, Qwen2, "
            f"BERT, ...): {exc}; use method attention or rollout instead"
        ) from None


def _head_values(anatomy: Anatomy, block: int, v: torch.Tensor) -> torch.Tensor:
    """f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h per head: [H, n, D], from the value projection's
    output v [n, kv heads x d] (the output bias is left out, as in Kobayashi et al.: it does
    not depend on j)."""
    n_heads = anatomy.n_heads or 1
    n_kv = anatomy.n_kv_heads or n_heads
    out_proj = anatomy.part("attn_out", block)
    with torch.no_grad():
        head_dim = v.shape[-1] // n_kv
        v = v.view(-1, n_kv, head_dim).transpose(0, 1)  # [n_kv, n, d]
        # grouped-query attention: each key/value head serves n_heads / n_kv query heads
        v = v.repeat_interleave(n_heads // n_kv, dim=0)  # [H, n, d]
        w_o = out_proj.weight.float().view(-1, n_heads, head_dim)  # [D, H, d]
        return torch.einsum("hnd,ehd->hne", v, w_o.to(v.device)).cpu()
