"""LIME over prompt tokens (Ribeiro et al. 2016, "'Why Should I Trust You?': Explaining the
Predictions of Any Classifier"), with captum's `Lime`.

Random binary masks keep or remove each prompt token (Bernoulli(0.5), captum's default
sampler); a ridge regression (alpha 1, as the reference `lime` package uses for text),
weighted by an exponential kernel on the cosine distance to the full input, is fitted to
the target's log-probability; its coefficients are the scores. Stochastic: `seed` fixes the
samples, `n_samples` trades time for stability. See surrogate.py for the batching.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="lime", n_samples=300)
"""

from __future__ import annotations

from explainers.attribution.base import Attribution
from explainers.attribution.surrogate import SurrogateExplainer, surrogate_attribution
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.params import Float
from explainers.registry import register


@register
class LimeExplainer(SurrogateExplainer):
    name = "lime"
    summary = "local linear surrogate fitted on random token removals (captum Lime)"
    param_checks = {"alpha": Float(low=0.0)}

    def attribute(
        self,
        obj: Objective,
        n_samples: int = 200,
        removal: str = "delete",
        baseline: str = "pad",
        alpha: float = 1.0,
        seed: int = 0,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime

        def factory(forward):
            return Lime(forward, interpretable_model=SkLearnRidge(alpha=float(alpha)))

        return surrogate_attribution(
            obj, factory, n_samples, removal, baseline, seed, batch_size, progress, alpha=alpha
        )
