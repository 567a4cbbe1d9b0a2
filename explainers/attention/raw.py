"""Raw attention weights per layer and head (the starting point every attention analysis
builds on; Jain & Wallace 2019 and Wiegreffe & Pinter 2019 debate how far they explain).

scores[r, j] is the weight the target row's position puts on prompt token j at `layer`,
for one `head` or averaged over the heads. The extras keep every layer's and head's map.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", method="attention", layer=-1, head=3)
"""

from __future__ import annotations

from explainers.attention.base import AttentionExplainer, AttentionMaps, AttentionPass
from explainers.registry import register


@register
class RawAttention(AttentionExplainer):
    name = "attention"
    summary = "raw attention weights of one layer (one head or the head mean); all in extras"

    def attribute(
        self, obj: AttentionPass, layer: int = -1, head: int | None = None
    ) -> AttentionMaps:
        index = obj.layer_index(layer)
        head = obj.head_index(head)
        heads = obj.attentions.numpy()  # [L, H, n, n]
        layers = heads.mean(axis=1)
        final = layers[index] if head is None else heads[index, head]
        params = {"layer": index, "head": "mean" if head is None else head}
        return AttentionMaps(final, final[obj.rows], layers, heads, params)
