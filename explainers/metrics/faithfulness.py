"""Faithfulness metrics: does removing what an explanation calls important change the output?

Every function here is pure: it takes one target row's scores over F removable units
(tokens or words) and a `Predictor`, the model seen as a function of which units are kept.
`explainers.metrics.evaluate` builds the predictor from a real model; tests pass toy ones.

- comprehensiveness and sufficiency as AOPC over removal bins (DeYoung et al. 2020, "ERASER:
  A Benchmark to Evaluate Rationalized NLP Models"; AOPC from Samek et al. 2017,
  "Evaluating the visualization of what a deep neural network has learned");
- deletion and insertion curves and their areas (Petsiuk et al. 2018, "RISE: Randomized
  Input Sampling for Explanation of Black-box Models");
- decision flip of the most important unit (Serrano & Smith 2019, "Is Attention
  Interpretable?"; Chrysostomou & Aletras 2021, "Improving the Faithfulness of
  Attention-based Explanations with Task-specific Information for Text Classification");
- Kendall's tau between a method and leave-one-out (as ferret's `taucorr_loo`, Attanasio
  et al. 2023, "ferret: a Framework for Benchmarking Explainers on Transformers").

Ranking: units are ordered by score, highest first (signed scores: the units that pushed
the target up come first); ties keep input order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# keep masks [N, F] (bool) -> prediction scores [N]: the probability of the target row.
Predictor = Callable[[np.ndarray], np.ndarray]

AOPC_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
MAX_CURVE_POINTS = 21


@dataclass
class Curve:
    """A deletion or insertion curve: prediction after each fraction of units removed/added."""

    fractions: list[float]
    values: list[float]
    area: float
    details: dict = field(default_factory=dict)


def ranking(scores: Sequence[float]) -> np.ndarray:
    """Unit indices, most important first (stable: ties keep input order)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def top_k_mask(scores: Sequence[float], k: int) -> np.ndarray:
    """Boolean mask of the k highest-scoring units."""
    mask = np.zeros(len(scores), dtype=bool)
    mask[ranking(scores)[:k]] = True
    return mask


def bin_size(fraction: float, n_units: int) -> int:
    """Units in a removal bin: ceil(fraction x F), at least 1 (1% of a short text is 1 unit)."""
    return min(n_units, max(1, math.ceil(fraction * n_units - 1e-9)))


def comprehensiveness(
    scores: Sequence[float],
    predict: Predictor,
    full: float,
    fractions: Sequence[float] = AOPC_FRACTIONS,
) -> tuple[float, list[float]]:
    """AOPC comprehensiveness (ERASER): mean over bins k of p(x) - p(x without its top-k units).

    Higher is better: removing what the explanation ranks first should hurt the prediction.
    `full` is p(x). Returns the AOPC and the drop per bin.
    """
    n = len(scores)
    keep = np.stack([~top_k_mask(scores, bin_size(f, n)) for f in fractions])
    drops = [full - float(v) for v in predict(keep)]
    return float(np.mean(drops)), drops


def sufficiency(
    scores: Sequence[float],
    predict: Predictor,
    full: float,
    fractions: Sequence[float] = AOPC_FRACTIONS,
) -> tuple[float, list[float]]:
    """AOPC sufficiency (ERASER): mean over bins k of p(x) - p(only the top-k units of x).

    Lower is better: the top units alone should keep the prediction (it can be negative).
    """
    n = len(scores)
    keep = np.stack([top_k_mask(scores, bin_size(f, n)) for f in fractions])
    drops = [full - float(v) for v in predict(keep)]
    return float(np.mean(drops)), drops


def curve_counts(n_units: int, max_points: int = MAX_CURVE_POINTS) -> list[int]:
    """How many units are removed (or inserted) at each curve point: 0..F, at most max_points."""
    if n_units + 1 <= max_points:
        return list(range(n_units + 1))
    return sorted({round(i * n_units / (max_points - 1)) for i in range(max_points)})


def _area(fractions: list[float], values: list[float]) -> float:
    return float(np.trapezoid(values, fractions))


def deletion_curve(
    scores: Sequence[float], predict: Predictor, max_points: int = MAX_CURVE_POINTS
) -> Curve:
    """Deletion (RISE): remove units in order of importance; area under p vs fraction removed.

    Lower area is better: a faithful ranking makes the prediction fall fast.
    """
    n = len(scores)
    order = ranking(scores)
    counts = curve_counts(n, max_points)
    keep = np.ones((len(counts), n), dtype=bool)
    for i, c in enumerate(counts):
        keep[i, order[:c]] = False
    values = [float(v) for v in predict(keep)]
    fractions = [c / n for c in counts]
    return Curve(fractions, values, _area(fractions, values))


def insertion_curve(
    scores: Sequence[float], predict: Predictor, max_points: int = MAX_CURVE_POINTS
) -> Curve:
    """Insertion (RISE): add units to an empty input in order of importance; area under p.

    Higher area is better: a faithful ranking restores the prediction fast.
    """
    n = len(scores)
    order = ranking(scores)
    counts = curve_counts(n, max_points)
    keep = np.zeros((len(counts), n), dtype=bool)
    for i, c in enumerate(counts):
        keep[i, order[:c]] = True
    values = [float(v) for v in predict(keep)]
    fractions = [c / n for c in counts]
    return Curve(fractions, values, _area(fractions, values))


def decision_flip(
    scores: Sequence[float], predict_label: Callable[[np.ndarray], np.ndarray], label: int
) -> float:
    """1.0 if removing the single most important unit changes the predicted token/label.

    `predict_label` maps keep masks [N, F] to predicted labels [N]; `label` is the
    prediction on the full input. Averaged over inputs it is the decision-flip rate.
    """
    keep = ~top_k_mask(scores, 1)[None, :]
    return float(int(predict_label(keep)[0]) != int(label))


def kendall_tau(scores: Sequence[float], reference: Sequence[float]) -> float:
    """Kendall's tau-b between two score vectors (e.g. a method and leave-one-out).

    1 = same ranking, -1 = reversed; nan when either vector is constant.
    """
    from scipy.stats import kendalltau

    a, b = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(kendalltau(a, b).statistic)
