"""Shared shape of attribution methods: `attribute(objective, **params)` returns scores, the
base class builds the Explanation (the explain template itself is `Explainer.explain`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.attribution.objective import BASELINES, Objective
from explainers.attribution.perturbation import REMOVALS
from explainers.base import Explainer, Explanation, choice_param, int_param, optional_int_param


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

    def explain_objective(self, obj: Objective, **params: Any) -> Explanation:
        result = self.attribute(obj, **params)
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

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Names the method takes, and the values the attribution family shares."""
        params = super().check_params(params)
        if "baseline" in params:
            params["baseline"] = self.check_baseline(params["baseline"])
        if "batch_size" in params:
            params["batch_size"] = optional_int_param("batch_size", params["batch_size"])
        if "removal" in params:
            params["removal"] = choice_param("removal", params["removal"], REMOVALS)
        if "seed" in params:
            params["seed"] = int_param("seed", params["seed"], minimum=0)
        return params

    def check_baseline(self, baseline: Any) -> str:
        return choice_param("baseline", baseline, BASELINES)

    def attribute(self, obj: Objective, **params: Any) -> Attribution:
        raise NotImplementedError
