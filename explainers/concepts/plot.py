"""The standard pictures of concept results (matplotlib): TCAV per layer against random
directions, steering's dose-response against random directions, RSA per layer against its
noise ceiling.

Each takes a stored record (the result's `to_dict()`, non-finite floats as None), so
`workbench tcav|steer|rsa --plot` and the dashboard draw the same figure. Figures are
built without pyplot: no global figure registry to leak in a long-running server, and no
display needed (PNG goes through Agg).

    >>> fig = tcav_figure(result.to_dict())                            # doctest: +SKIP
    >>> save_figure(fig, "tcav.png")                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.errors import WorkbenchError
from workbench.models import model_label

SIGNIFICANCE = 0.05  # the level the marked layers pass (TCAV: after Bonferroni)


def _floats(values: Sequence[float | None]) -> np.ndarray:
    """Stored numbers as floats, None (a non-finite value when stored) as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _model(record: dict[str, Any]) -> str:
    return model_label(record["model"], record.get("model_info"), short=True)


def tcav_figure(record: dict[str, Any]) -> Figure:
    """Per layer: the concept's mean TCAV score with each resample's score as a dot,
    random directions' mean +- 2 std as a band, and a star at layers that differ from
    random (Bonferroni-corrected p < 0.05)."""
    rows = record["layers"]
    layers = [r["layer"] for r in rows]
    random_mean = _floats([r["random_mean"] for r in rows])
    random_std = _floats([r["random_std"] for r in rows])
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.add_subplot()
    ax.fill_between(
        layers,
        random_mean - 2 * random_std,
        random_mean + 2 * random_std,
        color="grey",
        alpha=0.25,
        label="random directions: mean +- 2 std",
    )
    ax.plot(layers, random_mean, "--", color="grey", lw=1, label="random directions: mean")
    resamples = [(r["layer"], s) for r in rows for s in r["scores"] if s is not None]
    ax.scatter(
        [x for x, _ in resamples],
        [y for _, y in resamples],
        s=12,
        alpha=0.5,
        color="tab:blue",
        label="concept: one resample",
    )
    ax.plot(layers, _floats([r["score"] for r in rows]), "o-", color="tab:blue", label="concept")
    hits = [r for r in rows if r["significant"]]
    if hits:
        ax.plot(
            [r["layer"] for r in hits],
            [r["score"] for r in hits],
            "*",
            color="red",
            markersize=14,
            label=f"differs from random (Bonferroni p < {SIGNIFICANCE:g})",
        )
    ax.set_xlabel("layer (0 = embeddings)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("TCAV score (share of decisions with S > 0)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(
        f"TCAV of {record['concept']} on {_model(record)} ({record['n_decisions']} decisions)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def steering_figure(record: dict[str, Any]) -> Figure:
    """Above: the mean probability of the explained command over decisions against alpha,
    along the concept and along random directions. Below: the paired difference of their
    changes from alpha 0, with its 95% interval, per alpha."""
    alphas = record["alphas"]
    decisions = record["decisions"]
    fig = Figure(figsize=(7, 6), dpi=120)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for name, style, label in (
        ("concept", "o-", "concept direction"),
        ("random", "s--", "random directions (mean)"),
    ):
        if decisions:
            curves = np.stack([_floats(d[name]) for d in decisions])
            top.plot(alphas, np.nanmean(curves, axis=0), style, label=label)
    top.set_ylabel("p(explained command), mean")
    top.set_title(
        f"Steering along {record['concept']} at layer {record['layer']} on {_model(record)} "
        f"({record['n_decisions']} decisions)",
        fontsize=9,
    )
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="best")
    effects = record["effects"]
    difference = _floats([e["difference"] for e in effects])
    below = np.nan_to_num(difference - _floats([e["low"] for e in effects]))
    above = np.nan_to_num(_floats([e["high"] for e in effects]) - difference)
    bottom.errorbar(
        [e["alpha"] for e in effects],
        difference,
        yerr=[below, above],
        fmt="o",
        capsize=3,
        label="concept change - random change, 95% interval",
    )
    bottom.axhline(0.0, color="black", lw=0.5)
    bottom.set_xlabel("alpha (multiples of the direction added)")
    bottom.set_ylabel("effect vs random")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def rsa_figure(record: dict[str, Any]) -> Figure:
    """Spearman's rho between the model's and the game state's dissimilarities per layer,
    the noise ceiling as a dashed line (where states repeat), and a star at layers whose
    permutation p < 0.05."""
    rows = record["layers"]
    layers = [r["layer"] for r in rows]
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(layers, _floats([r["rho"] for r in rows]), "o-", label="rho (model vs state RDM)")
    ceiling = _floats([r["ceiling"] for r in rows])
    if not np.isnan(ceiling).all():
        ax.plot(layers, ceiling, "--", color="grey", label="noise ceiling")
    hits = [r for r in rows if r["p_value"] is not None and r["p_value"] < SIGNIFICANCE]
    if hits:
        ax.plot(
            [r["layer"] for r in hits],
            [r["rho"] for r in hits],
            "*",
            color="red",
            markersize=14,
            label=f"permutation p < {SIGNIFICANCE:g}",
        )
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Spearman rho")
    ax.set_title(
        f"RSA of {_model(record)} against the game state ({record['n_states']} states, "
        f"{record['metric']} distance)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


FIGURES = {"tcav": tcav_figure, "steer": steering_figure, "rsa": rsa_figure}


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` to `path` as PNG."""
    path = Path(path)
    if not path.parent.exists():
        raise WorkbenchError(f"cannot write {str(path)!r}: folder does not exist")
    fig.savefig(path, format="png")
    return path
