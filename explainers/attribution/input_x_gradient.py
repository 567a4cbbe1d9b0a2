"""Input x gradient (Shrikumar et al. 2016, "Not Just a Black Box: Learning Important Features
Through Propagating Activation Differences"; Kindermans et al. 2016, "Investigating the
influence of noise and distractors on the interpretation of neural networks").

score[r, p] = x_p . d f_r(x) / d x_p: the first-order Taylor term of token p's embedding,
summed over the embedding dimensions (captum's `InputXGradient`, summed the same way).
Signed: positive tokens pushed the target up. It is integrated gradients with a single
knot at the input and a zero baseline, so it has no completeness guarantee.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="input_x_gradient")
"""

from __future__ import annotations

import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.objective import Objective
from explainers.registry import register


def _dot(grad: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    return (grad * embeds).sum(-1)


@register
class InputXGradient(AttributionExplainer):
    name = "input_x_gradient"
    summary = "embedding times gradient per token (first-order Taylor term)"

    def attribute(self, obj: Objective, batch_size: int | None = None) -> Attribution:
        x = obj.input_embeddings.unsqueeze(0)
        _, grads = batched_row_gradients(obj, x, _dot, batch_size)
        scores = grads[0]
        scores[:, obj.special_mask] = 0.0
        return Attribution(scores.numpy().astype("float64"))
