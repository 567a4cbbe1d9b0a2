"""The concept figures, drawn from small stored-shape records (a result's `to_dict()` with
non-finite floats as None, as the store gives them back)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.concepts import AlphaEffect, EpisodeOutcome, SteeringResult
from explainers.concepts.plot import rsa_figure, save_figure, steering_figure, tcav_figure
from explainers.concepts.rsa import LayerRSA, RSAResult
from explainers.concepts.tcav import LayerTCAV, TCAVResult
from workbench.errors import WorkbenchError
from workbench.store import finite


def tcav_record() -> dict:
    layers = [
        LayerTCAV(0, 0.5, [0.5, 0.5, 0.5], 0.5, 0.0, [0.5] * 20, 0.0, 1.0, 1.0, False, 0.0),
        LayerTCAV(1, 0.9, [0.8, 0.9, 1.0], 0.5, 0.1, [0.5] * 20, math.inf, 0.0, 0.0, True, 0.3),
        LayerTCAV(2, 0.6, [0.5, 0.7], 0.5, math.nan, [0.5] * 20, 1.0, 0.3, 0.9, False, 0.1),
    ]
    result = TCAVResult("has:key", "tiny-llama", layers, n_decisions=8, n_positive=4, n_negative=4)
    return finite(result.to_dict())


def steering_record() -> dict:
    alphas = [-2.0, 0.0, 2.0, 4.0]
    effects = [
        AlphaEffect(a, 0.1 * a, 0.01 * a, 0.09 * a, 0.05 * a - 0.1, 0.13 * a + 0.1, 0.04, 3)
        for a in alphas
        if a
    ]
    decisions = [
        {"command": "open door", "concept": [0.2, 0.4, 0.6, 0.8], "random": [0.4, 0.4, 0.41, 0.4]},
        {"command": "open door", "concept": [0.1, 0.3, 0.5, 0.9], "random": [0.3, 0.3, 0.3, 0.3]},
    ]
    episodes = [EpisodeOutcome("concept", 2.0, 2, 1, 0.5, 0.1, 0.9, math.nan)]
    result = SteeringResult(
        "has:key",
        "tiny-llama",
        layer=1,
        alphas=alphas,
        effects=effects,
        n_decisions=2,
        direction={"concept": "has:key", "layer": 1},
        decisions=decisions,
        episodes=episodes,
    )
    return finite(result.to_dict())


def rsa_record(ceiling: bool = True) -> dict:
    layers = [
        LayerRSA(0, 0.05, 0.4, 0.6 if ceiling else None),
        LayerRSA(1, 0.3, 0.01, 0.7 if ceiling else None),
        LayerRSA(2, 0.2, 0.03, None),
    ]
    result = RSAResult("tiny-llama", layers, n_states=12, n_unique=6, n_repeated=4, metric="cosine")
    return finite(result.to_dict())


def line(ax, label: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return found


def test_tcav_figure_draws_scores_resamples_random_band_and_stars(tmp_path):
    fig = tcav_figure(tcav_record())
    path = save_figure(fig, tmp_path / "tcav.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = fig.axes
    assert list(line(ax, "concept").get_ydata()) == [0.5, 0.9, 0.6]
    (dots,) = ax.collections[1:]  # after the random band
    assert len(dots.get_offsets()) == 3 + 3 + 2  # every resample
    stars = [ln for ln in ax.get_lines() if ln.get_label().startswith("differs from random")]
    assert [list(s.get_xdata()) for s in stars] == [[1]]  # the significant layer only
    assert "has:key" in ax.get_title() and "8 decisions" in ax.get_title()


def test_steering_figure_draws_mean_curves_and_effects_with_intervals(tmp_path):
    fig = steering_figure(steering_record())
    save_figure(fig, tmp_path / "steer.png")
    assert (tmp_path / "steer.png").stat().st_size > 0
    top, bottom = fig.axes
    concept = line(top, "concept direction").get_ydata()
    assert concept == pytest.approx([0.15, 0.35, 0.55, 0.85])  # the mean over decisions
    assert len(line(top, "random directions (mean)").get_ydata()) == 4
    (effects,) = bottom.containers  # the error bars
    points = effects.lines[0]
    assert list(points.get_xdata()) == [-2.0, 2.0, 4.0]  # alpha 0 has no effect
    assert points.get_ydata() == pytest.approx([-0.18, 0.18, 0.36])


def test_rsa_figure_draws_rho_the_noise_ceiling_and_significant_layers(tmp_path):
    fig = rsa_figure(rsa_record())
    save_figure(fig, tmp_path / "rsa.png")
    assert (tmp_path / "rsa.png").exists()
    (ax,) = fig.axes
    assert list(line(ax, "rho (model vs state RDM)").get_ydata()) == [0.05, 0.3, 0.2]
    ceiling = line(ax, "noise ceiling").get_ydata()
    assert ceiling[:2].tolist() == [0.6, 0.7] and np.isnan(ceiling[2])  # a gap, not a zero
    assert list(line(ax, "permutation p < 0.05").get_xdata()) == [1, 2]
    # Without repeated states there is no ceiling to draw.
    (bare,) = rsa_figure(rsa_record(ceiling=False)).axes
    assert "noise ceiling" not in [ln.get_label() for ln in bare.get_lines()]


def test_save_figure_says_when_the_folder_is_missing(tmp_path):
    with pytest.raises(WorkbenchError, match="folder does not exist"):
        save_figure(rsa_figure(rsa_record()), tmp_path / "no" / "rsa.png")
