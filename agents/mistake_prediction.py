"""Do explanations predict mistakes? A logistic regression on the explanation features of a
run's decisions, against a baseline that sees only the model's own confidence.

Why: an explanation signal is worth a researcher's attention where it tells a wrong
decision from a right one, and the cheapest signal is the model's own confidence (the
margin of the chosen command over the runner-up, the entropy over candidates). The
question is therefore not "do the features predict mistakes" but "do they predict them
beyond the confidence": the explanation model sees the baseline's features plus the
explanation's (segment masses, OPERA's attention on summary tokens, a probe's confidence;
`agents.decision_features`), and the report gives the difference of the two AUROCs.

How, and why so:
- Out-of-fold probabilities, with folds grouped by game: decisions of one game share their
  map, recipe and history, so a game seen in training would leak into its own test fold.
  Both models use the same folds, so their AUROCs are paired.
- Intervals from a cluster bootstrap that resamples games, not decisions, for the same
  reason (decisions within a game are not independent); the difference is bootstrapped on
  the same resamples, so its interval is the paired one. A resample with one class has no
  AUROC and is skipped.
- Each feature is imputed with its training fold's median and standardised, so the
  coefficients of the model fit on all decisions compare across features (per standard
  deviation), and a missing value never reads as an extreme one.

    >>> report = predict_mistakes(feature_frame(store, "l3-llm"))   # doctest: +SKIP
    >>> report.reading()                                            # doctest: +SKIP
    "explanation features add +0.080 AUROC [+0.030, +0.130] beyond the model's confidence"
    >>> plot_calibration(report, "calibration.png")                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.files import atomic_path, check_writable
from workbench.stats import Interval

if TYPE_CHECKING:
    import pandas as pd

# Columns that identify a decision or judge it: never features.
LABELS = ("episode_id", "game_id", "level", "step", "mistake", "regret", "lost")
BASELINE = ("margin", "entropy")
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Coefficient:
    """One feature's weight in the explanation model: log-odds of a mistake per standard
    deviation of the feature, the other features held fixed."""

    feature: str
    coef: float


@dataclass(frozen=True)
class CalibrationCurve:
    """Out-of-fold predicted mistake probability against the observed mistake rate, per
    bin of decisions (quantile bins: equal numbers of decisions)."""

    predicted: list[float]
    observed: list[float]


@dataclass
class PredictionReport:
    """Explanation model against confidence-only baseline, on the same grouped folds.

    `explanation`, `baseline` and `difference` (explanation - baseline) are AUROCs with
    95% cluster-bootstrap intervals (`n` of each: the bootstrap resamples that had both
    classes). `fold` and the out-of-fold `probabilities` are per row of the frame, in its
    order, and stay out of `to_dict`.
    """

    features: list[str]  # the explanation model's, baseline's first
    baseline_features: list[str]
    dropped: list[str]  # all NaN or constant: nothing to learn from
    decisions: int
    mistakes: int
    games: int
    folds: int
    seed: int
    n_boot: int
    explanation: Interval
    baseline: Interval
    difference: Interval
    coefficients: list[Coefficient]
    calibration: dict[str, CalibrationCurve]  # "explanation", "baseline"
    fold: np.ndarray = field(repr=False)
    probabilities: dict[str, np.ndarray] = field(repr=False)

    def reading(self) -> str:
        """What the difference says, in one line."""
        d = self.difference
        if not d.n:
            return "no bootstrap resample had both classes: too few games to tell"
        span = f"{d.mean:+.3f} AUROC [{d.low:+.3f}, {d.high:+.3f}]"
        if d.low > 0:
            return f"explanation features add {span} beyond the model's confidence"
        if d.high < 0:
            return (
                f"explanation features do worse than the model's confidence alone, {span}:"
                " they overfit more than they inform"
            )
        return f"no evidence they add anything: {span}, the interval includes 0"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "mistakes": self.mistakes,
            "games": self.games,
            "folds": self.folds,
            "seed": self.seed,
            "n_boot": self.n_boot,
            "features": self.features,
            "baseline_features": self.baseline_features,
            "dropped": self.dropped,
            "auroc": {
                "explanation": _interval_dict(self.explanation),
                "baseline": _interval_dict(self.baseline),
                "difference": _interval_dict(self.difference),
            },
            "reading": self.reading(),
            "coefficients": [asdict(c) for c in self.coefficients],
            "calibration": {k: asdict(v) for k, v in self.calibration.items()},
        }


def predict_mistakes(
    frame: pd.DataFrame,
    features: Sequence[str] | None = None,
    baseline: Sequence[str] = BASELINE,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 2000,
) -> PredictionReport:
    """Cross-validated logistic regressions predicting `frame.mistake`: the baseline on
    `baseline`, the explanation model on `baseline` plus `features`.

    Args:
        frame: one row per judged decision (`agents.decision_features.feature_frame`): ids
            and labels (LABELS), and numeric feature columns, NaN where not measured.
        features: the explanation features; None: every numeric column that is not an id,
            a label or a baseline feature. Columns all NaN or constant are dropped.
        baseline: the confidence features both models see.
        folds: cross-validation folds, grouped by game (at most one per game).
        seed: for the folds' shuffle and the bootstrap.
        n_boot: bootstrap resamples of games.

    Raises WorkbenchError (one line) for a frame without two games, without both classes,
    or without a usable baseline or explanation feature.
    """
    from sklearn.metrics import roc_auc_score

    if folds < 2 or n_boot < 1:
        raise WorkbenchError(
            f"give 2 folds or more and 1 resample or more, not {folds} and {n_boot}"
        )
    missing = [c for c in ("game_id", "mistake", *baseline) if c not in frame.columns]
    if missing:
        raise WorkbenchError(f"the decision features have no column {missing[0]!r}")
    y = frame["mistake"].to_numpy(dtype=bool)
    games = frame["game_id"].astype(str).to_numpy()
    n_games = len(set(games))
    if n_games < 2:
        raise WorkbenchError(
            f"predicting mistakes needs decisions from 2 games or more, not {n_games}:"
            " folds are grouped by game"
        )
    if y.all() or not y.any():
        which = "mistakes" if y.all() else "correct"
        raise WorkbenchError(f"all {len(y)} decisions are {which}: there is nothing to tell apart")
    if features is None:
        numeric = frame.select_dtypes(include="number").columns
        features = [c for c in numeric if c not in LABELS and c not in baseline]
    else:
        unknown = [c for c in features if c not in frame.columns]
        if unknown:
            raise WorkbenchError(f"the decision features have no column {unknown[0]!r}")
        features = [c for c in features if c not in baseline]
    numeric = frame[[*baseline, *features]].select_dtypes(include="number").columns
    words = [c for c in (*baseline, *features) if c not in numeric]
    if words:
        raise WorkbenchError(f"feature {words[0]!r} is not a number column")
    dropped = [c for c in (*baseline, *features) if _uninformative(frame[c])]
    base_cols = [c for c in baseline if c not in dropped]
    extra_cols = [c for c in features if c not in dropped]
    if not base_cols:
        raise WorkbenchError(
            f"the baseline's features {', '.join(baseline)} are all NaN or constant"
        )
    if not extra_cols:
        raise WorkbenchError(
            "no explanation feature to add to the baseline: every other column is an id,"
            " a label, all NaN or constant"
        )
    exp_cols = [*base_cols, *extra_cols]

    n_folds = min(folds, n_games)
    fold = _grouped_folds(y, games, n_folds, seed)
    p_exp = _out_of_fold(frame[exp_cols].to_numpy(dtype=float), y, fold)
    p_base = _out_of_fold(frame[base_cols].to_numpy(dtype=float), y, fold)

    auc_exp, auc_base = roc_auc_score(y, p_exp), roc_auc_score(y, p_base)
    boot = _cluster_bootstrap(y, games, p_exp, p_base, n_boot, seed)
    model = _pipeline().fit(frame[exp_cols].to_numpy(dtype=float), y)
    weights = model[-1].coef_[0]
    coefficients = sorted(
        (Coefficient(c, float(w)) for c, w in zip(exp_cols, weights)),
        key=lambda c: -abs(c.coef),
    )
    return PredictionReport(
        features=exp_cols,
        baseline_features=base_cols,
        dropped=dropped,
        decisions=len(y),
        mistakes=int(y.sum()),
        games=n_games,
        folds=n_folds,
        seed=seed,
        n_boot=n_boot,
        explanation=_interval(auc_exp, boot[:, 0]),
        baseline=_interval(auc_base, boot[:, 1]),
        difference=_interval(auc_exp - auc_base, boot[:, 0] - boot[:, 1]),
        coefficients=coefficients,
        calibration={
            "explanation": _calibration(y, p_exp),
            "baseline": _calibration(y, p_base),
        },
        fold=fold,
        probabilities={"explanation": p_exp, "baseline": p_base},
    )


def _uninformative(column: pd.Series) -> bool:
    """All NaN or one value: a feature nothing can be learnt from."""
    return column.nunique(dropna=True) <= 1


def _pipeline():
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000)
    )


def _grouped_folds(y: np.ndarray, games: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The test fold of each row: stratified by mistake as far as whole games allow."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(y), -1)
    with warnings.catch_warnings():
        # Fewer mistakes than folds is expected of a good agent; the folds stay grouped.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, games)):
            fold[test] = k
    owners = {g: set(fold[games == g]) for g in set(games)}
    assert all(len(f) == 1 for f in owners.values()), "a game was split across folds"
    return fold


def _out_of_fold(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each row's mistake probability from the model fit on the other folds. A training
    part with one class (all of a run's mistakes in the held-out games) predicts its rate."""
    p = np.empty(len(y))
    for k in np.unique(fold):
        test = fold == k
        train_y = y[~test]
        if train_y.all() or not train_y.any():
            p[test] = float(train_y.mean())
            continue
        p[test] = _pipeline().fit(x[~test], train_y).predict_proba(x[test])[:, 1]
    return p


def _cluster_bootstrap(
    y: np.ndarray, games: np.ndarray, p_exp: np.ndarray, p_base: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """(explanation AUROC, baseline AUROC) per resample of whole games with replacement;
    resamples with one class are left out."""
    from sklearn.metrics import roc_auc_score

    rows = [np.flatnonzero(games == g) for g in dict.fromkeys(games)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked = np.concatenate([rows[i] for i in rng.integers(len(rows), size=len(rows))])
        labels = y[picked]
        if labels.all() or not labels.any():
            continue
        out.append((roc_auc_score(labels, p_exp[picked]), roc_auc_score(labels, p_base[picked])))
    return np.array(out, dtype=float).reshape(-1, 2)


def _interval(estimate: float, resamples: np.ndarray) -> Interval:
    """The estimate with the 95% percentile interval of its resamples (NaN without any)."""
    if not len(resamples):
        return Interval(float(estimate), np.nan, np.nan, 0)
    low, high = np.percentile(resamples, [2.5, 97.5])
    return Interval(float(estimate), float(low), float(high), len(resamples))


def _interval_dict(interval: Interval) -> dict[str, float | int | None]:
    """An interval for JSON, where NaN is no value."""
    return {k: None if v != v else v for k, v in asdict(interval).items()}


def _calibration(y: np.ndarray, p: np.ndarray) -> CalibrationCurve:
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="quantile")
    return CalibrationCurve([float(v) for v in predicted], [float(v) for v in observed])


def check_plot_path(path: str | Path) -> Path:
    """`path` if the calibration plot can be written there: a *.png in a folder that
    exists (checked before anything slow runs)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise WorkbenchError(
            f"the calibration plot is a PNG; name the file *.png, not {path.name!r}"
        )
    return check_writable(path)


def plot_calibration(report: PredictionReport, path: str | Path) -> Path:
    """Write both models' calibration curves, with the diagonal of perfect calibration, to
    `path` (PNG, written whole or not at all)."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    try:
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfectly calibrated")
        for name, marker, auroc in (
            ("explanation", "o-", report.explanation),
            ("baseline", "s--", report.baseline),
        ):
            curve = report.calibration[name]
            label = f"{name} model (AUROC {auroc.mean:.2f})"
            ax.plot(curve.predicted, curve.observed, marker, label=label)
        ax.set_xlabel("predicted probability of a mistake (out of fold)")
        ax.set_ylabel("observed mistake rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(
            f"{report.decisions} decisions, {report.mistakes} mistakes, {report.games} games,"
            f" {report.folds} folds by game",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
