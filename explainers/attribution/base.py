"""Shared shape of attribution methods: `attribute(objective, **params)` returns scores, the
base class builds the Explanation (the explain template itself is `Explainer.explain`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.attribution.perturbation import REMOVALS
from explainers.explainer import Explainer
from explainers.explanation import Explanation
from explainers.objective import BASELINES, Objective
from explainers.params import Choice, Int


@dataclass
class Attribution:
    """What `AttributionExplainer.attribute` returns: scores [rows, P] and what goes with them.

    `warnings` (with `status`) become the Explanation's: what the method could not do.
    """

    scores: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    expected: list[float] | None = None
    delta: list[float] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)


class AttributionExplainer(Explainer):
    """An attribution method: subclasses implement `attribute(objective, **params)`."""

    category = "attribution"
    takes_contrast = True
    takes_candidates = True
    param_checks = {
        "baseline": Choice(*BASELINES),
        "batch_size": Int(min=1, optional=True),
        "removal": Choice(*REMOVALS),
        "seed": Int(min=0),
    }

    def explain_objective(self, obj: Objective, **params: Any) -> Explanation:
        return self.explanation_of(obj, self.attribute(obj, **params))

    def explanation_of(self, obj: Objective, result: Attribution) -> Explanation:
        """The Explanation of an attribution of `obj` by this method (also for attributions
        computed outside `attribute`, such as an agent step's segment Shapley values)."""
        exp = Explanation.from_objective(
            self,
            obj,
            result.scores,
            params=result.params,
            baseline=result.baseline,
            expected=result.expected,
            delta=result.delta,
            extras=result.extras,
        )
        for warning in result.warnings:
            exp.warn(warning)
        exp.status = result.status
        return exp

    def attribute(self, obj: Objective, **params: Any) -> Attribution:
        raise NotImplementedError
