"""Metrics that say how far an explanation can be trusted.

Faithfulness (does the model depend on what the explanation highlights?) and plausibility
(does it agree with a human rationale?); see faithfulness.py and plausibility.py for the
definitions and papers, evaluate.py for running them against a model.

    >>> from explainers.metrics import evaluate               # doctest: +SKIP
    >>> evaluate(exp, lm, rationale=[0, 1, 0, 0]).metrics
"""

from explainers.metrics.evaluate import (
    FAITHFULNESS,
    HIGHER_IS_BETTER,
    PLAUSIBILITY,
    Evaluation,
    evaluate,
    explanation_objective,
    random_explanation,
)
from explainers.metrics.faithfulness import (
    comprehensiveness,
    decision_flip,
    deletion_curve,
    insertion_curve,
    kendall_tau,
    sufficiency,
)
from explainers.metrics.plausibility import auprc, token_f1, token_iou

__all__ = [
    "FAITHFULNESS",
    "HIGHER_IS_BETTER",
    "PLAUSIBILITY",
    "Evaluation",
    "auprc",
    "comprehensiveness",
    "decision_flip",
    "deletion_curve",
    "evaluate",
    "explanation_objective",
    "insertion_curve",
    "kendall_tau",
    "random_explanation",
    "sufficiency",
    "token_f1",
    "token_iou",
]
