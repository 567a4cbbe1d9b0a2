"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer's head-averaged attention A_l is mixed with the identity for the residual
connection, A'_l = (1 - residual) A_l + residual I, and its rows renormalised to sum to one;
the rollout through layer l is the product R_l = A'_l R_{l-1} (R_0 = I). Row i of the last
R says how much of position i's top representation derives from each input token, under
the assumption that information mixes linearly through the layers.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", method="rollout")
"""

from __future__ import annotations

import numpy as np

from explainers.attention.base import AttentionExplainer, AttentionMaps, AttentionPass
from explainers.registry import register
from workbench.errors import WorkbenchError


def residual_attention(attentions: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """[L, H, n, n] (or [L, n, n], already head-averaged) -> [L, n, n] of row-stochastic
    A'_l = (1 - residual) mean_h A_l + residual I, rows renormalised."""
    if not 0.0 <= residual <= 1.0:
        raise WorkbenchError(f"residual must be between 0 and 1, not {residual}")
    mean = attentions.mean(axis=1) if attentions.ndim == 4 else attentions
    n = mean.shape[-1]
    mixed = (1.0 - residual) * mean + residual * np.eye(n)[None]
    return mixed / mixed.sum(axis=-1, keepdims=True)


def attention_rollout(attentions: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """[L, n, n] cumulative rollouts: entry l is A'_l A'_{l-1} ... A'_0."""
    mixed = residual_attention(attentions, residual)
    out = np.empty_like(mixed)
    current = np.eye(mixed.shape[-1])
    for layer, a in enumerate(mixed):
        current = a @ current
        out[layer] = current
    return out


@register
class AttentionRollout(AttentionExplainer):
    name = "rollout"
    summary = "attention rollout: residual-mixed head-mean attention multiplied through layers"

    def attribute(self, obj: AttentionPass, residual: float = 0.5) -> AttentionMaps:
        rollouts = attention_rollout(obj.attentions.numpy().astype(np.float64), float(residual))
        final = rollouts[-1]
        return AttentionMaps(final, final[obj.rows], rollouts, None, {"residual": residual})
