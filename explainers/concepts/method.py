"""`tcav` as a registered method: a decision's concept sensitivity, token by token.

For a direction v at resid layer l (a file from `workbench steer --save-direction`, or
`ConceptDirection.save`), score[r, p] = d f_r / d h_l[p] . v: how much moving position p's
state along the concept would raise the objective (the choice of a candidate, or a
target's log-probability). Summed over the prompt it is TCAV's sensitivity with the
direction at every prompt position; its last position alone is the decision token's. One
forward and one backward per objective row, like saliency.

    >>> explain(lm, prompt, "tcav", candidates=cands, direction="knife.npz")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.concepts.directions import ConceptDirection
from explainers.concepts.tcav import resid_gradients
from explainers.objective import Objective
from explainers.registry import register
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError


def direction_file(name: str, value: Any) -> str:
    """A direction file's path: given, an .npz, and there (checked with no model)."""
    path = Path(str(value or ""))
    if not str(value or "").strip():
        raise WorkbenchError(f"{name} is required: a direction file (.npz) from workbench steer")
    if path.suffix != ".npz" or not path.is_file():
        raise WorkbenchError(f"{name}: no direction file (.npz) at {str(path)!r}")
    return str(path)


@register
class ConceptSensitivity(AttributionExplainer):
    name = "tcav"
    category = "probing"
    summary = "concept sensitivity per token: gradient at a layer along a concept direction"
    takes_contrast = True
    param_checks = {"direction": direction_file}

    def attribute(
        self,
        obj: Objective,
        direction: str = "",
    ) -> Attribution:
        concept = ConceptDirection.load(direction_file("direction", direction))
        if concept.per_position:
            raise WorkbenchError("tcav takes a direction of one vector, not an ActAdd one")
        concept.check_model(obj.lm, model_anatomy(obj.lm).n_layers + 1)
        (grad,) = resid_gradients(obj, [concept.layer])  # [rows, T, D]
        prompt = int(obj.prompt_ids.numel())
        v = grad.new_tensor(concept.vector)
        scores = (grad[:, :prompt] @ v).cpu().numpy().astype(np.float64)  # [rows, P]
        scores[:, obj.special_mask.numpy()] = 0.0
        return Attribution(
            scores,
            {"direction": direction},
            extras={
                "concept": concept.concept,
                "layer": concept.layer,
                "direction_source": concept.source,
                "sensitivity": scores.sum(1).tolist(),
                "decision_token": scores[:, -1].tolist(),
            },
        )
