"""Kernel SHAP over prompt tokens (Lundberg & Lee 2017, "A Unified Approach to Interpreting
Model Predictions"), with captum's `KernelShap`.

Coalitions of prompt tokens are drawn with the Shapley kernel's size distribution and a
linear model is fitted to the target's log-probability; its coefficients estimate each
token's Shapley value (removed tokens are deleted, or replaced by the pad/EOS token).
Stochastic: `seed` fixes the coalitions. See surrogate.py for the batching.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="kernel_shap")
"""

from __future__ import annotations

from explainers.attribution.base import Attribution
from explainers.attribution.surrogate import SurrogateExplainer, surrogate_attribution
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.registry import register


@register
class KernelShapExplainer(SurrogateExplainer):
    name = "kernel_shap"
    summary = "Shapley values estimated by a kernel-weighted linear fit (captum KernelShap)"

    def attribute(
        self,
        obj: Objective,
        n_samples: int = 200,
        removal: str = "delete",
        baseline: str = "pad",
        seed: int = 0,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        from captum.attr import KernelShap

        return surrogate_attribution(
            obj, KernelShap, n_samples, removal, baseline, seed, batch_size, progress
        )
