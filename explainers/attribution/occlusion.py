"""Occlusion / leave-one-out (Zeiler & Fergus 2014, "Visualizing and Understanding
Convolutional Networks"; for text, Li et al. 2016, "Understanding Neural Networks through
Representation Erasure").

score[r, p] = f_r(x) - f_r(x without unit u(p)), a unit being a token or a whitespace word
(`unit="word"`; a word's drop is shared equally by its tokens, so word aggregation gives it
back). Removal deletes the unit (`removal="delete"`, as ERASER and ferret do) or puts the
pad/EOS token in its place (`removal="replace"`, captum's Occlusion with a one-token
window). All variants go through the model in batched forwards (perturbation.py).

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="occlusion")
"""

from __future__ import annotations

import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.perturbation import check_removal, evaluate_kept
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.params import Choice, choice_param
from explainers.registry import register

UNITS = ("token", "word")


def unit_masks(obj: Objective, unit: str) -> torch.Tensor:
    """[U, P] bool: which prompt positions each removable unit covers (specials excluded)."""
    choice_param("unit", unit, UNITS)
    removable = ~obj.special_mask
    groups = torch.arange(len(removable)) if unit == "token" else torch.tensor(obj.word_ids)
    units = sorted({int(g) for g, r in zip(groups, removable) if r})
    return (
        torch.stack([(groups == u) & removable for u in units])
        if units
        else torch.zeros(0, len(removable), dtype=torch.bool)
    )


@register
class Occlusion(AttributionExplainer):
    name = "occlusion"
    summary = "leave-one-out: drop of the target when a token or word is removed"
    reports_progress = True

    param_checks = {"unit": Choice(*UNITS)}

    def attribute(
        self,
        obj: Objective,
        unit: str = "token",
        removal: str = "delete",
        baseline: str = "pad",
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        """score[r, p]: the drop of row r's objective when the unit holding token p is removed."""
        check_removal(removal)
        masks = unit_masks(obj, unit)
        scores = torch.zeros(obj.n_rows, len(obj.prompt_ids))
        if len(masks):
            # The full prompt is one more variant of the same batched forwards (with the
            # prompt's cache reused, it costs only its target rows).
            keep = torch.cat([~masks, torch.ones(1, masks.shape[1], dtype=torch.bool)])
            values, _ = evaluate_kept(obj, keep, removal, baseline, batch_size, progress)
            drop = values[-1:] - values[:-1]  # [U, rows]
            for u, mask in enumerate(masks):
                scores[:, mask] = (drop[u] / mask.sum()).unsqueeze(1)
        params = {"unit": unit, "removal": removal}
        used_baseline = baseline if removal == "replace" else None
        return Attribution(scores.numpy().astype("float64"), params, used_baseline)
