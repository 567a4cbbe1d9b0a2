"""GradientSHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions";
the expected-gradients estimator of Erion et al. 2021, as in captum's `GradientShap`).

For n samples k: draw a baseline b_k from the baseline distribution, a point a_k ~ U(0, 1)
and optional Gaussian noise e_k (standard deviation `stdevs`) on the input; then
score[r, p] = mean_k (x_p + e_kp - b_kp) . d f_r / d x_p at b_k + a_k (x + e_k - b_k).
It estimates integrated gradients averaged over baselines, so each row sums, in
expectation, to f_r(x) - E_b f_r(b) (recorded in extras with the gap of this estimate).

`baseline` is one name or a comma-separated distribution ("zero,eos"); `seed` makes the
draws repeatable. All samples go through the model together (batched_row_gradients).

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="gradient_shap")
"""

from __future__ import annotations

from typing import Any

import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.explainer import Progress
from explainers.objective import BASELINES, Objective
from explainers.params import Float, Int, choice_param
from explainers.registry import register
from workbench.errors import WorkbenchError


def check_baselines(name: str, value: Any) -> str:
    """One baseline name or a comma-separated distribution of them ("zero,eos")."""
    names = [b.strip() for b in str(value).split(",") if b.strip()]
    if not names:
        raise WorkbenchError(f"{name} needs at least one of {', '.join(BASELINES)}")
    for one in names:
        choice_param(name, one, BASELINES)
    return ",".join(names)


@register
class GradientShap(AttributionExplainer):
    name = "gradient_shap"
    summary = "expected gradients over random baselines and path points (stochastic)"
    reports_progress = True

    param_checks = {
        "baseline": check_baselines,
        "n_samples": Int(min=1),
        "stdevs": Float(low=0.0),
    }

    def attribute(
        self,
        obj: Objective,
        n_samples: int = 32,
        baseline: str = "zero",
        stdevs: float = 0.0,
        seed: int = 0,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        names = baseline.split(",")
        x = obj.input_embeddings
        refs = torch.stack([obj.baseline_embeddings(b) for b in names])  # [M, P, D]
        gen = torch.Generator().manual_seed(int(seed))
        which = torch.randint(len(names), (n_samples,), generator=gen)
        alphas = torch.rand(n_samples, generator=gen).view(-1, 1, 1)
        noise = torch.randn((n_samples, *x.shape), generator=gen) * float(stdevs)
        noise[:, obj.special_mask] = 0.0  # special tokens stay as they are (objective.py)
        noisy = x.cpu().unsqueeze(0) + noise
        b = refs.cpu()[which]
        points = b + alphas * (noisy - b)
        diff = noisy - b
        _, grads = batched_row_gradients(
            obj,
            points,
            lambda grad, d: (grad * d).sum(-1),
            batch_size,
            context=diff,
            progress=progress,
        )
        scores = grads.mean(0)  # [rows, P]
        with torch.no_grad():
            f_refs = obj.forward_embeddings(refs.to(obj.lm.device)).float().cpu()  # [M, rows]
        expected = obj.row_values().float().cpu() - f_refs[which].mean(0)
        params = {"n_samples": n_samples, "stdevs": float(stdevs), "seed": int(seed)}
        extras = {
            "expected": expected.tolist(),
            "estimate_gap": (scores.sum(-1) - expected).tolist(),
        }
        return Attribution(scores.numpy().astype("float64"), params, baseline, extras=extras)
