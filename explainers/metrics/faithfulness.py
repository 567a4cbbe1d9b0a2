"""Faithfulness metrics: does removing what an explanation calls important change the output?

Every function here is pure: it takes one target row's scores over F removable units
(tokens or words) and a `Predictor`, the model seen as a function of which units are kept.
`explainers.metrics.evaluation` builds the predictor from a real model; tests pass toy ones.

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
the target up come first); ties keep input order (ferret's reversed argsort puts the later
of two tied units first: the conventions differ only on tied scores).

Two conventions define the AOPC bins and the hard rationale (`Convention`):

- "eraser" (ERASER's paper, the default): bins of 1, 5, 10, 20 and 50% of the units,
  rounded up (at least one unit); signed scores, so every bin is filled; the AOPC is the
  mean over all bins, so a unit set that several bins share weighs once per bin (with 4
  units, bins 1-20% all remove the top unit: it weighs 4/5). Plausibility's hard rationale
  has as many units as the human rationale.
- "ferret" (ferret-xai 0.4.2's defaults): bins of 10, 20, ..., 100% of the units, rounded
  down; only units with a positive score enter a bin (the top-k units, then those > 0); a
  bin with no unit, or with the same set as the previous bin kept, is left out, so each
  distinct set weighs once. With no bin left, comprehensiveness is 0 and sufficiency 1
  (ferret's defaults). The hard rationale is the top 5 units, those > 0 of them; AUPRC
  reads the scores clipped at 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.errors import WorkbenchError

# keep masks [N, F] (bool) -> prediction scores [N]: the probability of the target row.
Predictor = Callable[[np.ndarray], np.ndarray]

AOPC_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
MAX_CURVE_POINTS = 21


@dataclass(frozen=True)
class Convention:
    """How AOPC bins and hard rationales are defined (see the module docstring)."""

    name: str
    fractions: tuple[float, ...]
    round_up: bool  # bin size ceil(f x F), at least 1; else floor(f x F), 0 = no bin
    positive_only: bool  # only units scored > 0 enter a bin or the hard rationale
    skip_repeated: bool  # a bin with the previous kept bin's units is left out of the mean
    rationale_k: int | None  # hard rationale size; None = the human rationale's size
    empty_comprehensiveness: float = 0.0  # the value when no bin is left (ferret)
    empty_sufficiency: float = 1.0


ERASER = Convention("eraser", AOPC_FRACTIONS, True, False, False, None)
FERRET = Convention("ferret", tuple(i / 10 for i in range(1, 11)), False, True, True, 5)
CONVENTIONS = {c.name: c for c in (ERASER, FERRET)}


def get_convention(name: str | Convention) -> Convention:
    """A convention by name ("eraser" or "ferret"); a `Convention` passes through."""
    if isinstance(name, Convention):
        return name
    if name not in CONVENTIONS:
        raise WorkbenchError(f"convention must be eraser or ferret, not {name!r}")
    return CONVENTIONS[name]


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


def top_k_mask(scores: Sequence[float], k: int, positive_only: bool = False) -> np.ndarray:
    """Boolean mask of the k highest-scoring units (of those among them scored > 0, with
    `positive_only`)."""
    values = np.asarray(scores, dtype=np.float64)
    top = ranking(values)[:k]
    if positive_only:
        top = top[values[top] > 0]
    mask = np.zeros(len(values), dtype=bool)
    mask[top] = True
    return mask


def bin_size(fraction: float, n_units: int, round_up: bool = True) -> int:
    """Units in a removal bin: ceil(fraction x F), at least 1 (1% of a short text is 1 unit);
    or, with `round_up=False`, floor(fraction x F), which may be 0."""
    if round_up:
        return min(n_units, max(1, math.ceil(fraction * n_units - 1e-9)))
    return min(n_units, math.floor(fraction * n_units + 1e-9))


def removal_bins(
    scores: Sequence[float],
    convention: Convention = ERASER,
    fractions: Sequence[float] | None = None,
) -> list[np.ndarray | None]:
    """Per AOPC fraction, the mask of the units its bin removes (or keeps), None where the
    convention leaves the bin out (no unit in it, or the previous kept bin's units)."""
    n = len(scores)
    bins: list[np.ndarray | None] = []
    previous = None
    for fraction in convention.fractions if fractions is None else fractions:
        size = bin_size(fraction, n, convention.round_up)
        mask = top_k_mask(scores, size, convention.positive_only) if size else None
        if mask is not None and not mask.any():
            mask = None
        repeated = convention.skip_repeated and previous is not None
        if mask is not None and repeated and np.array_equal(mask, previous):
            mask = None
        if mask is not None:
            previous = mask
        bins.append(mask)
    return bins


def _aopc(
    scores: Sequence[float],
    predict: Predictor,
    full: float,
    convention: Convention,
    fractions: Sequence[float] | None,
    keep_top: bool,
    empty: float,
) -> tuple[float, list[float | None]]:
    bins = removal_bins(scores, convention, fractions)
    used = [b for b in bins if b is not None]
    if not used:
        return empty, [None] * len(bins)
    keep = np.stack(used if keep_top else [~b for b in used])
    drops = iter([full - float(v) for v in predict(keep)])
    per_bin = [None if b is None else next(drops) for b in bins]
    return float(np.mean([d for d in per_bin if d is not None])), per_bin


def comprehensiveness(
    scores: Sequence[float],
    predict: Predictor,
    full: float,
    fractions: Sequence[float] | None = None,
    convention: Convention | str = ERASER,
) -> tuple[float, list[float | None]]:
    """AOPC comprehensiveness: mean over bins of p(x) - p(x without the bin's top units).

    Higher is better: removing what the explanation ranks first should hurt the prediction.
    `full` is p(x); bins follow `convention` (`fractions` replaces its fractions; how
    repeated bins weigh is the convention's, see the module docstring). Returns the AOPC and
    the drop per bin (None for a bin the convention leaves out).
    """
    c = get_convention(convention)
    return _aopc(scores, predict, full, c, fractions, False, c.empty_comprehensiveness)


def sufficiency(
    scores: Sequence[float],
    predict: Predictor,
    full: float,
    fractions: Sequence[float] | None = None,
    convention: Convention | str = ERASER,
) -> tuple[float, list[float | None]]:
    """AOPC sufficiency: mean over bins of p(x) - p(only the bin's top units of x).

    Lower is better: the top units alone should keep the prediction (it can be negative).
    Bins as in `comprehensiveness`.
    """
    c = get_convention(convention)
    return _aopc(scores, predict, full, c, fractions, True, c.empty_sufficiency)


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
    return _curve(scores, predict, max_points, removing=True)


def insertion_curve(
    scores: Sequence[float], predict: Predictor, max_points: int = MAX_CURVE_POINTS
) -> Curve:
    """Insertion (RISE): add units to an empty input in order of importance; area under p.

    Higher area is better: a faithful ranking restores the prediction fast.
    """
    return _curve(scores, predict, max_points, removing=False)


def _curve(scores: Sequence[float], predict: Predictor, max_points: int, removing: bool) -> Curve:
    """p at each curve point: the top units (by `scores`) removed from the full input
    (`removing`, deletion) or the only ones kept (insertion)."""
    n = len(scores)
    order = ranking(scores)
    counts = curve_counts(n, max_points)
    keep = np.full((len(counts), n), removing, dtype=bool)
    for i, c in enumerate(counts):
        keep[i, order[:c]] = not removing
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
