"""Accuracy by layer: the standard picture of a probing result (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

from explainers.metrics import better
from explainers.probing.probes import ProbeResult
from workbench.errors import WorkbenchError


def plot_probe(result: ProbeResult, path: str | Path) -> Path:
    """Write probe accuracy, control accuracy, selectivity and the majority baseline per
    layer to `path` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise WorkbenchError("writing a plot needs matplotlib: pip install matplotlib") from None
    path = Path(path)
    if not path.parent.exists():
        raise WorkbenchError(f"cannot write {str(path)!r}: folder does not exist")
    layers = [r.layer for r in result.layers]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(
        layers,
        [r.accuracy for r in result.layers],
        "o-",
        label=f"probe accuracy ({better('accuracy')} is better)",
    )
    ax.plot(
        layers,
        [r.control_accuracy for r in result.layers],
        "s--",
        label=f"control task ({better('control_accuracy')} is better)",
    )
    ax.plot(
        layers,
        [r.selectivity for r in result.layers],
        "^-",
        label=f"selectivity ({better('selectivity')} is better)",
    )
    negative = [r for r in result.layers if r.selectivity < 0]
    if negative:
        ax.plot(
            [r.layer for r in negative],
            [r.selectivity for r in negative],
            "x",
            color="red",
            markersize=10,
            label="negative selectivity: memorisation",
        )
    ax.axhline(0.0, color="black", lw=0.5)
    ax.axhline(result.layers[0].majority, color="grey", lw=1, ls=":", label="majority label")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(min(0.0, min(r.selectivity for r in result.layers)) - 0.05, 1.05)
    title = f"{result.task} on {result.model} ({result.n_examples} examples, {result.split} split)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
