"""Do explanations predict mistakes, on synthetic decisions whose answer is known: a feature
that carries the mistake beyond the confidence is found, pure noise is not, folds never
split a game, bad input is one line, and the calibration plot is written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agents.mistake_prediction import plot_calibration, predict_mistakes
from workbench.errors import WorkbenchError


def decisions(
    seed: int, informative: bool, games: int = 40, per_game: int = 8, mistake_bias: float = -1.0
) -> pd.DataFrame:
    """A frame like `feature_frame`'s: the confidence (margin, entropy) predicts mistakes
    somewhat; `seg_inventory` predicts them beyond it when `informative`, else it is noise.
    The recipe mass is missing where the cookbook was not read, the probe is never
    measured, and the example segment is constant."""
    rng = np.random.default_rng(seed)
    n = games * per_game
    game = np.repeat([f"game{i}" for i in range(games)], per_game)
    margin = rng.normal(size=n)
    hidden = rng.normal(size=n)  # what the confidence does not see
    logit = mistake_bias - margin + (2.0 * hidden if informative else 0.0)
    mistake = rng.random(n) < 1 / (1 + np.exp(-logit))
    recipe = rng.normal(size=n)
    recipe[rng.random(n) < 0.5] = np.nan
    return pd.DataFrame(
        {
            "episode_id": game,
            "game_id": game,
            "level": 1,
            "step": np.tile(np.arange(per_game), games),
            "mistake": mistake,
            "regret": mistake.astype(int),
            "lost": False,
            "margin": margin,
            "entropy": rng.normal(size=n) - 0.5 * margin,
            "seg_inventory": hidden if informative else rng.normal(size=n),
            "seg_recipe": recipe,
            "seg_example": 0.0,
            "probe_confidence": np.nan,
        }
    )


def test_a_feature_that_carries_the_mistake_beyond_the_confidence_is_found():
    report = predict_mistakes(decisions(0, informative=True), n_boot=200)
    assert report.explanation.mean > report.baseline.mean + 0.1
    assert report.difference.low > 0, report.difference
    assert report.reading().startswith("explanation features add")
    assert report.coefficients[0].feature == "seg_inventory" and report.coefficients[0].coef > 0
    # Nothing to learn from a column never measured or always the same.
    assert set(report.dropped) == {"seg_example", "probe_confidence"}
    assert report.features == ["margin", "entropy", "seg_inventory", "seg_recipe"]
    assert report.baseline_features == ["margin", "entropy"]
    assert (report.decisions, report.games, report.folds) == (320, 40, 5)
    assert report.mistakes == int(decisions(0, informative=True).mistake.sum())


def test_noise_is_never_reported_as_adding():
    """Pure noise never gets an interval above 0, nor a reading that it adds. Its interval
    holds 0 or lies just below: the paired bootstrap holds the out-of-fold predictions
    fixed, so the small cost of fitting noise can show ("they overfit")."""
    for seed in range(5):
        report = predict_mistakes(decisions(seed, informative=False), seed=seed, n_boot=50)
        assert report.difference.low <= 0 and abs(report.difference.mean) < 0.05, seed
        assert not report.reading().startswith("explanation features add"), report.reading()


def test_folds_never_split_a_game():
    frame = decisions(3, informative=True, games=12, per_game=5)
    frame = frame.drop(index=frame.index[frame.game_id == "game4"][:3])  # games differ in size
    report = predict_mistakes(frame, folds=5, n_boot=20)
    assert report.folds == 5 and sorted(set(report.fold)) == [0, 1, 2, 3, 4]
    folds_of = frame.assign(fold=report.fold).groupby("game_id").fold.nunique()
    assert (folds_of == 1).all()

    few = decisions(4, informative=True, games=3, per_game=20, mistake_bias=0.0)
    report = predict_mistakes(few, folds=5, n_boot=20)
    assert report.folds == 3  # one fold per game
    assert few.assign(fold=report.fold).groupby("game_id").fold.nunique().eq(1).all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.assign(mistake=False), "all 320 decisions are correct"),
        (lambda f: f.assign(game_id="game0"), "needs decisions from 2 games or more, not 1"),
        (lambda f: f[["game_id", "mistake", "margin", "entropy", "seg_example"]], "no explanation"),
        (lambda f: f.drop(columns="entropy"), "no column 'entropy'"),
    ],
)
def test_bad_input_is_one_line(edit, message):
    with pytest.raises(WorkbenchError, match=message) as error:
        predict_mistakes(edit(decisions(5, informative=True)), n_boot=10)
    assert "\n" not in str(error.value)


def test_the_calibration_plot_is_written(tmp_path):
    report = predict_mistakes(decisions(6, informative=True), n_boot=50)
    json.dumps(report.to_dict(), allow_nan=False)  # the --format json document
    path = plot_calibration(report, tmp_path / "calibration.png")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
    for curve in report.calibration.values():
        assert len(curve.predicted) == len(curve.observed) >= 5
    with pytest.raises(WorkbenchError, match=r"name the file \*\.png") as error:
        plot_calibration(report, tmp_path / "calibration.pdf")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.png"]
