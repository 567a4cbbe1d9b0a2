"""Plausibility metrics: does an explanation agree with a human rationale?

A rationale is a 0/1 mark per unit (token or word): 1 where a person says the evidence is.
Definitions follow ERASER (DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate
Rationalized NLP Models") as ferret implements them (Attanasio et al. 2023):

- token F1 and IOU compare the rationale with the explanation's hard rationale, its top-k
  units: k is the rationale's size (the "eraser" convention) or 5 units scored > 0
  ("ferret", as ferret-xai 0.4.2's `top_k_rationale` and `only_pos`), unless given;
- AUPRC scores the soft ranking: the area under the precision-recall curve of the scores
  against the rationale (scikit-learn's `precision_recall_curve` and `auc`, as ferret),
  the scores clipped at 0 under the "ferret" convention.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explainers.metrics.faithfulness import ERASER, Convention, get_convention, top_k_mask
from workbench.errors import WorkbenchError


def check_rationale(rationale: Sequence[int], n_units: int) -> np.ndarray:
    """The rationale as a bool array; one-line errors for a wrong length or non-0/1 values."""
    values = np.asarray(rationale)
    if values.ndim != 1 or len(values) != n_units:
        raise WorkbenchError(
            f"the rationale has {len(values)} values but the explanation has {n_units} "
            "tokens; give one 0/1 per token"
        )
    if not np.isin(values, (0, 1)).all():
        raise WorkbenchError("the rationale must contain only 0 and 1")
    return values.astype(bool)


def hard_rationale(
    scores: Sequence[float], rationale: np.ndarray, k: int | None, convention: Convention = ERASER
) -> np.ndarray:
    """The explanation's top-k units: k given, else the convention's (ERASER: the human
    rationale's size; ferret: 5, of which only those scored > 0)."""
    if k is None:
        k = int(rationale.sum()) if convention.rationale_k is None else convention.rationale_k
    return top_k_mask(scores, k, convention.positive_only)


def _truth_and_prediction(
    scores: Sequence[float],
    rationale: Sequence[int],
    k: int | None,
    convention: Convention | str,
) -> tuple[np.ndarray, np.ndarray]:
    """The rationale and the top-k units (the hard rationale of `scores`), as bool masks."""
    truth = check_rationale(rationale, len(scores))
    return truth, hard_rationale(scores, truth, k, get_convention(convention))


def token_f1(
    scores: Sequence[float],
    rationale: Sequence[int],
    k: int | None = None,
    convention: Convention | str = ERASER,
) -> float:
    """F1 of the top-k units against the rationale (0 when either side is empty)."""
    truth, pred = _truth_and_prediction(scores, rationale, k, convention)
    tp = int((truth & pred).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / pred.sum(), tp / truth.sum()
    return float(2 * precision * recall / (precision + recall))


def token_iou(
    scores: Sequence[float],
    rationale: Sequence[int],
    k: int | None = None,
    convention: Convention | str = ERASER,
) -> float:
    """|top-k and rationale| / |top-k or rationale| (0 when both are empty)."""
    truth, pred = _truth_and_prediction(scores, rationale, k, convention)
    union = int((truth | pred).sum())
    return 0.0 if union == 0 else float((truth & pred).sum() / union)


def auprc(
    scores: Sequence[float], rationale: Sequence[int], convention: Convention | str = ERASER
) -> float:
    """Area under the precision-recall curve of the scores (nan without any rationale unit);
    under the ferret convention the scores are clipped at 0 first."""
    from sklearn.metrics import auc, precision_recall_curve

    truth = check_rationale(rationale, len(scores))
    if not truth.any():
        return float("nan")
    values = np.asarray(scores, dtype=np.float64)
    if get_convention(convention).positive_only:
        values = np.clip(values, 0.0, None)
    precision, recall, _ = precision_recall_curve(truth.astype(int), values)
    return float(auc(recall, precision))


def parse_rationale(value: str | Sequence[int]) -> list[int]:
    """A rationale from "0,1,1,0", "0 1 1 0", a JSON list, or a file holding one of those."""
    if not isinstance(value, str):
        items = list(value)
    else:
        text = value.strip()
        path = Path(text)
        looks_like_list = text[:1] in ("[", "0", "1")
        if not looks_like_list or (len(text) < 4096 and path.is_file()):
            if not path.is_file():
                raise WorkbenchError(f"rationale: no such file {text!r}, and not a 0/1 list")
            text = path.read_text(encoding="utf-8").strip()
        try:
            items = json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        except json.JSONDecodeError:
            raise WorkbenchError(f"rationale is not a valid JSON list: {text[:60]!r}") from None
    try:
        values = [int(v) for v in items]
    except (TypeError, ValueError):
        raise WorkbenchError("the rationale must be 0/1 values, e.g. 0,1,1,0") from None
    if not values:
        raise WorkbenchError("the rationale is empty; give one 0/1 per token, e.g. 0,1,1,0")
    if any(v not in (0, 1) for v in values):
        raise WorkbenchError("the rationale must contain only 0 and 1")
    return values
