"""The result of a patching sweep: an `Explanation` whose rows are layers.

`scores[i, j]` is the normalised restoration of patching layer `layers[i]` at column j:
0 = the corrupted run's value, 1 = the clean run's (for every direction and method). The
columns are prompt positions (`positions`, all of them by default, so that the row is as
long as `input_tokens`), or heads for the `head` component.

    >>> exp = explain(lm, clean, method="activation_patching", corrupt=corrupted)  # doctest: +SKIP
    >>> exp.best()                                                                 # doctest: +SKIP
    (0, 4, 1.0)                       # layer 0, position 4 restores everything
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from explainers.explanation import Explanation, score_matrix
from explainers.tokens import visible_token
from workbench.errors import WorkbenchError


@dataclass
class PatchingExplanation(Explanation, category="causal"):
    """Normalised restoration per (layer, position) or (layer, head).

    Besides the `Explanation` fields: `component` (resid, attn, mlp, head), `layers` (one per
    row), `hook_names` (the TransformerLens-style name patched in each row), `positions`
    (the prompt position of each column; empty for heads), `clean_value` and
    `corrupt_value` (the metric on the unpatched runs), `metric` (logprob or logit_diff),
    `direction` (denoise: clean into corrupted; noise: corrupted into clean), and the
    corrupted input (`corrupt_text`, `corrupt_tokens`; for causal tracing the noised
    positions are in `params`).
    """

    component: str = "resid"
    layers: list[int] = field(default_factory=list)
    hook_names: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    clean_value: float = 0.0
    corrupt_value: float = 0.0
    metric: str = "logprob"
    direction: str = "denoise"
    corrupt_text: str | None = None
    corrupt_tokens: list[str] | None = None

    def __post_init__(self) -> None:
        self.scores = score_matrix(self.scores)
        rows, cols = self.scores.shape
        if rows != len(self.layers):
            raise ValueError(f"scores have {rows} rows for {len(self.layers)} layers")
        if self.component != "head":
            if not self.positions and cols == len(self.input_tokens):
                self.positions = list(range(cols))
            if cols != len(self.positions):
                raise ValueError(f"scores have {cols} columns for {len(self.positions)} positions")
        self.layers = [int(x) for x in self.layers]
        self.positions = [int(x) for x in self.positions]
        self.clean_value = float(self.clean_value)
        self.corrupt_value = float(self.corrupt_value)

    # -- views ----------------------------------------------------------------------------

    @property
    def column_labels(self) -> list[str]:
        if self.component == "head":
            return [f"H{h}" for h in range(self.scores.shape[1])]
        return [self.input_tokens[p] for p in self.positions]

    def aggregate(self, level: str = "word") -> PatchingExplanation:
        if level == "token":
            return self
        raise WorkbenchError(
            f"{self.method} scores layers by positions; aggregate must be token, not {level!r}"
        )

    def top_tokens(self, row: int = 0, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores[row])[:k]
        labels = self.column_labels
        return [(labels[i], float(self.scores[row, i])) for i in order]

    def best(self) -> tuple[int, int, float]:
        """(layer, position or head, restoration) of the cell that restores the most."""
        i, j = np.unravel_index(int(np.argmax(self.scores)), self.scores.shape)
        column = int(j) if self.component == "head" else self.positions[int(j)]
        return self.layers[int(i)], column, float(self.scores[i, j])

    # -- renderings -----------------------------------------------------------------------

    def show(self, console: Any = None, tolerance: float = 0.05) -> None:
        del tolerance  # no completeness property
        render_patching_terminal(self, console or Console())

    def to_html(self) -> str:
        return render_patching_html(self)


def _summary(exp: PatchingExplanation) -> list[str]:
    what = {
        "activation_patching": "exact activation patching",
        "attribution_patching": "attribution patching (first-order estimate)",
        "causal_tracing": "causal tracing",
    }.get(exp.method, exp.method)
    target = "".join(exp.target_tokens)
    contrast = exp.extras.get("contrast_tokens")
    metric = f"log p({target!r})"
    if exp.metric == "logit_diff":
        metric = f"logit({target!r}) - logit({''.join(contrast or [])!r})"
    lines = [
        f"{what} of {exp.component} on {exp.model_label} ({exp.direction}), metric {metric}",
        f"clean {exp.clean_value:+.4f}, corrupted {exp.corrupt_value:+.4f}; cells: normalised "
        "restoration, 0 = corrupted, 1 = clean",
    ]
    if "exact_correlation" in exp.extras:
        lines.append(f"correlation with exact patching: {exp.extras['exact_correlation']:.3f}")
    layer, column, value = exp.best()
    where = f"head {column}" if exp.component == "head" else f"position {column}"
    if exp.component != "head":
        where += f" {visible_token(exp.input_tokens[column])!r}"
    lines.append(f"strongest: layer {layer}, {where}: {value:+.3f}")
    return lines


def _cell_style(score: float) -> str:
    s = max(-1.0, min(1.0, score))
    level = int(40 + 215 * abs(s))
    return f"on rgb({level},40,40)" if s >= 0 else f"on rgb(40,40,{level})"


def render_patching_terminal(exp: PatchingExplanation, console: Console) -> None:
    """A heatmap: one line per prompt position (per layer for heads), one cell per layer
    (per head); red restores the clean behaviour, blue pushes further away. Up to 16
    columns the cells show their values; wider maps show shades (" ░▒▓█" = 0 .. 1)."""
    for k, line in enumerate(_summary(exp)):
        console.print(Text(line, style="bold" if k == 0 else ""))
    for warning in exp.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    numbers = exp.scores.shape[0 if exp.component != "head" else 1] <= 16
    cell = 6 if numbers else 2
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 0))
    if exp.component == "head":
        table.add_column("layer", justify="right")
        for label in _column_labels(list(range(exp.scores.shape[1])), numbers, cell, "H"):
            table.add_column(label, justify="right", min_width=cell)
        for i, layer in enumerate(exp.layers):
            table.add_row(f"{layer} ", *[_cell(v, numbers, cell) for v in exp.scores[i]])
    else:
        table.add_column("position", justify="left")
        for label in _column_labels(exp.layers, numbers, cell, ""):
            table.add_column(label, justify="right", min_width=cell)
        for j, pos in enumerate(exp.positions):
            label = f"{pos:>3} {visible_token(exp.input_tokens[pos])[:14]:<14} "
            table.add_row(label, *[_cell(v, numbers, cell) for v in exp.scores[:, j]])
    console.print(table)
    axis = "columns: heads, rows: layers" if exp.component == "head" else "columns: layers"
    if not numbers:
        axis += f", numbered every {LABEL_EVERY}"
    console.print(Text(f"({axis}; hook names like {exp.hook_names[0]})", style="dim"))


LABEL_EVERY = 5  # narrow shade columns: a number every 5th column, so digits never touch


def _column_labels(values: list[int], numbers: bool, cell: int, prefix: str) -> list[str]:
    """Column headers: every value (with `prefix`, e.g. H for heads) over numeric cells;
    over 2-wide shade cells, the number of every LABEL_EVERY-th column and blanks between,
    so that neighbouring numbers never run together."""
    if numbers:
        return [f"{prefix}{v}".rjust(cell) for v in values]
    return [str(v) if i % LABEL_EVERY == 0 else "" for i, v in enumerate(values)]


SHADES = " ░▒▓█"


def _cell(value: float, numbers: bool, width: int) -> Text:
    """A number on a coloured background; or, for wide maps, a shade glyph coloured red
    (restores) or blue (pushes away), which still reads without colours (a pipe)."""
    if not numbers:
        level = SHADES[min(len(SHADES) - 1, round(min(abs(value), 1.0) * (len(SHADES) - 1)))]
        colour = "rgb(220,40,40)" if value >= 0 else "rgb(40,90,220)"
        return Text(level * width, style=colour)
    shown = 0.0 if abs(value) < 0.005 else value  # no "-0.00"
    text = f"{shown:+.2f}" if abs(shown) < 10 else f"{shown:+.0f}"
    return Text(text.rjust(width), style=_cell_style(float(value)))


def render_patching_html(exp: PatchingExplanation) -> str:
    """A self-contained page (inline CSS, no scripts): the heatmap as a table, every token
    escaped, each cell's value on hover."""
    esc = html.escape

    def td(value: float, title: str) -> str:
        s = max(-1.0, min(1.0, float(value)))
        rgb = "220,40,40" if s >= 0 else "40,90,220"
        return (
            f'<td style="background:rgba({rgb},{abs(s):.3f})" '
            f'title="{esc(title)}: {float(value):+.4f}">{float(value):+.2f}</td>'
        )

    if exp.component == "head":
        head = "".join(f"<th>H{h}</th>" for h in range(exp.scores.shape[1]))
        body = "".join(
            f"<tr><th>{layer}</th>"
            + "".join(td(v, f"{exp.hook_names[i]} head {h}") for h, v in enumerate(exp.scores[i]))
            + "</tr>"
            for i, layer in enumerate(exp.layers)
        )
        header = f"<tr><th>layer</th>{head}</tr>"
    else:
        head = "".join(f"<th>{layer}</th>" for layer in exp.layers)
        body = "".join(
            f"<tr><th>{pos}</th><td class='tok'>{esc(visible_token(exp.input_tokens[pos]))}</td>"
            + "".join(
                td(v, f"{exp.hook_names[i]} position {pos}") for i, v in enumerate(exp.scores[:, j])
            )
            + "</tr>"
            for j, pos in enumerate(exp.positions)
        )
        header = f"<tr><th>pos</th><th>token</th>{head}</tr>"
    lines = "".join(f"<p class='meta'>{esc(line)}</p>" for line in _summary(exp))
    warnings = "".join(f"<p class='warn'>warning: {esc(w)}</p>" for w in exp.warnings)
    title = esc(f"{exp.method} of {exp.component}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table.patch td, table.patch th {{ font-family: ui-monospace, monospace; font-size: .75em;
  padding: 1px 4px; text-align: right; white-space: pre; }}
table.patch td.tok {{ text-align: left; }}
.meta {{ color: #444; font-size: .9em; margin: .2em 0; }} .warn {{ color: #b60; }}
</style></head><body>
<h1>{title}</h1>
{lines}{warnings}
<p class="meta">input: <code>{esc(exp.input_text)}</code></p>
<table class="patch">{header}{body}</table>
</body></html>
"""
