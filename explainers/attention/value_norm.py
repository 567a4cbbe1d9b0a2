"""Attention weighted by transformed value norms (Kobayashi et al. 2020, "Attention is Not
Only a Weight: Analyzing Transformers with Vector Norms").

An attention head's output at position i is sum_j alpha_ij f(x_j), with
f(x) = (x W_V + b_V) W_O the value vector carried through the output projection. A large
weight on a token whose f(x) is tiny moves nothing, so the norm ||alpha_ij f(x_j)|| measures
what token j actually contributes. Per head that is alpha^h_ij ||f^h(x_j)||; for a layer the
heads' vectors add up first: ||sum_h alpha^h_ij f^h(x_j)||.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", method="attn_norm", layer=-1)
"""

from __future__ import annotations

import numpy as np
import torch

from explainers.attention.base import AttentionExplainer, AttentionMaps, AttentionPass
from explainers.registry import register


def value_norm_maps(
    attentions: torch.Tensor, values: list[torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """[L, H, n, n] weights, per-layer [H, n, D] f(x) -> (heads [L, H, n, n], layers [L, n, n])."""
    heads, layers = [], []
    for alpha, f in zip(attentions, values):
        norms = f.norm(dim=-1)  # [H, n]
        heads.append((alpha * norms[:, None, :]).numpy())
        # Rows one at a time keep memory at n * D instead of n * n * D.
        rows = [torch.einsum("hj,hjd->jd", alpha[:, i], f) for i in range(alpha.shape[-1])]
        layer = torch.stack([row.norm(dim=-1) for row in rows])
        layers.append(layer.numpy())
    return np.stack(heads), np.stack(layers)


@register
class AttentionNorm(AttentionExplainer):
    name = "attn_norm"
    summary = "attention x transformed value-vector norm ||alpha f(x)|| (Kobayashi et al. 2020)"
    needs_values = True

    def attribute(
        self, obj: AttentionPass, layer: int = -1, head: int | None = None
    ) -> AttentionMaps:
        index = obj.layer_index(layer)
        head = obj.head_index(head)
        heads, layers = value_norm_maps(obj.attentions, obj.values or [])
        final = layers[index] if head is None else heads[index, head]
        params = {"layer": index, "head": "layer" if head is None else head}
        return AttentionMaps(final, final[obj.rows], layers, heads, params)
