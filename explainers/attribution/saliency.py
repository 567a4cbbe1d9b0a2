"""Saliency: the size of the objective's gradient at each input token (Simonyan et al. 2014,
"Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency
Maps"; for text, Li et al. 2016, "Visualizing and Understanding Neural Models in NLP").

score[r, p] = || d f_r(x) / d x_p ||, the norm of the gradient over the embedding
dimensions of token p: L2 by default, or L1 (`norm="l1"`, the sum of captum's
`Saliency(abs=True)` over the embedding). Unsigned: it says how sensitive the target is to a
token, not in which direction the token pushed it.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="saliency")
"""

from __future__ import annotations

import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.objective import Objective
from explainers.params import Choice
from explainers.registry import register

NORMS = ("l2", "l1")


@register
class Saliency(AttributionExplainer):
    name = "saliency"
    summary = "gradient norm per token (unsigned sensitivity)"

    param_checks = {"norm": Choice(*NORMS)}

    def attribute(
        self, obj: Objective, norm: str = "l2", batch_size: int | None = None
    ) -> Attribution:
        order = 2 if norm == "l2" else 1

        def reduce(grad: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return torch.linalg.vector_norm(grad, ord=order, dim=-1)

        x = obj.input_embeddings.unsqueeze(0)
        _, grads = batched_row_gradients(obj, x, reduce, batch_size)
        scores = grads[0]
        # Special tokens are part of the input format, not the text (see objective.py).
        scores[:, obj.special_mask] = 0.0
        return Attribution(scores.numpy().astype("float64"), {"norm": norm})
