"""Shared shape of attribution methods: resolve the target, attribute, build the Explanation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainers.attribution.objective import Objective, prepare
from explainers.base import Explainer, Explanation, timed
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel


@dataclass
class Attribution:
    """What `AttributionExplainer.attribute` returns: scores [rows, P] and what goes with them."""

    scores: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    expected: list[float] | None = None
    delta: list[float] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class AttributionExplainer(Explainer):
    """An attribution method: subclasses implement `attribute(objective, **params)`."""

    category = "attribution"

    @timed
    def explain(
        self,
        model: LoadedModel,
        text: str,
        target: str | int | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
        aggregate: str = "token",
        **params: Any,
    ) -> Explanation:
        if aggregate not in ("token", "word"):
            raise WorkbenchError(f"unknown aggregation {aggregate!r}; choose token or word")
        obj = prepare(model, text, target, generate=generate, contrast=contrast)
        result = self.attribute(obj, **params)
        extras = dict(result.extras)
        if obj.contrast_tokens is not None:
            extras["contrast_tokens"] = obj.contrast_tokens
            extras["contrast_ids"] = obj.contrast_ids.tolist()
        if obj.lm.kind != "classifier":
            # Decoded tokens may not re-tokenize to these ids; metrics re-run the objective.
            extras["target_ids"] = obj.target_ids.tolist()
        exp = Explanation(
            method=self.name,
            category=self.category,
            model=model.name,
            input_text=text,
            input_tokens=obj.input_tokens,
            target_tokens=obj.target_tokens,
            scores=result.scores,
            baseline=result.baseline,
            params=result.params,
            expected=result.expected,
            delta=result.delta,
            word_ids=obj.word_ids,
            extras=extras,
        )
        return exp.aggregate(aggregate)

    def attribute(self, obj: Objective, **params: Any) -> Attribution:
        raise NotImplementedError
