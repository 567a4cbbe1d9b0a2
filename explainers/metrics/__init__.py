"""Metrics that say how far an explanation can be trusted.

Faithfulness (does the model depend on what the explanation highlights?) and plausibility
(does it agree with a human rationale?); see faithfulness.py and plausibility.py for the
definitions, papers and conventions ("eraser", "ferret"), evaluation.py for running them
against a model. `HIGHER_IS_BETTER` says which direction of each metric is better, for
every table and chart that shows one (probe figures included).

    >>> from explainers.metrics import evaluate               # doctest: +SKIP
    >>> evaluate(exp, lm, rationale=[0, 1, 0, 0]).metrics

Importing this package loads no model library: `evaluate` and what comes with it (torch)
load on first use.
"""

from __future__ import annotations

from typing import Any

from explainers.metrics.faithfulness import (
    CONVENTIONS,
    ERASER,
    FERRET,
    Convention,
    comprehensiveness,
    decision_flip,
    deletion_curve,
    insertion_curve,
    kendall_tau,
    sufficiency,
)
from explainers.metrics.plausibility import auprc, token_f1, token_iou

FAITHFULNESS = (
    "comprehensiveness",
    "sufficiency",
    "deletion_auc",
    "insertion_auc",
    "decision_flip",
    "kendall_tau_loo",
)
PLAUSIBILITY = ("token_f1", "token_iou", "auprc")
PROBE_METRICS = ("accuracy", "control_accuracy", "selectivity")

HIGHER_IS_BETTER = {
    "comprehensiveness": True,
    "sufficiency": False,
    "deletion_auc": False,
    "insertion_auc": True,
    "decision_flip": True,
    "kendall_tau_loo": True,
    "token_f1": True,
    "token_iou": True,
    "auprc": True,
    # probes (Hewitt & Liang 2019): the control task should be hard, the real one easy
    "accuracy": True,
    "control_accuracy": False,
    "selectivity": True,
}


def better(name: str) -> str:
    """ "higher" or "lower": the better direction of metric `name`, for labels."""
    return "higher" if HIGHER_IS_BETTER[name] else "lower"


_LAZY = {
    "Evaluation": "explainers.metrics.evaluation",
    "evaluate": "explainers.metrics.evaluation",
    "explanation_objective": "explainers.metrics.evaluation",
    "random_explanation": "explainers.metrics.evaluation",
}


def __getattr__(name: str) -> Any:
    # The model-side functions import torch; the definitions above need only numpy.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONVENTIONS",
    "ERASER",
    "FAITHFULNESS",
    "FERRET",
    "HIGHER_IS_BETTER",
    "PLAUSIBILITY",
    "PROBE_METRICS",
    "Convention",
    "Evaluation",
    "auprc",
    "better",
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
