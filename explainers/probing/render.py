"""Renderings of probing results: the logit lens as a layer-by-position table of each
layer's top next token with the target's rank per layer (the classic logit-lens picture),
and linear probes as a table of accuracies per layer. Tokens are escaped.

Probe tables label each column with the better direction (`explainers.metrics.better`) and
flag a negative selectivity: there the probe fits the control task's random labels better
than the real ones, so its accuracy reflects memorisation, not the property probed.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from explainers.metrics import better
from explainers.tokens import visible_token

if TYPE_CHECKING:
    from explainers.explanation import Explanation
    from explainers.probing.probes import ProbeResult

LENS_POSITIONS = 10  # the last positions shown: where the prediction forms


LENS_CELL = 8  # characters of a token shown in a cell (its probability goes below it)


def render_lens_terminal(exp: Explanation, console: Console | None = None) -> None:
    """The last positions (as many as fit the terminal, at most LENS_POSITIONS), each cell
    the layer's top next token over its probability; the title says which were left out."""
    extras = exp.extras
    if "top" not in extras:
        return
    console = console or Console()
    tokens, layers = extras["tokens"], extras["layers"]
    # layer and target-rank columns take ~20 characters; a position column LENS_CELL + 3
    fits = max(1, (console.width - 20) // (LENS_CELL + 3))
    start = max(0, len(tokens) - min(LENS_POSITIONS, fits))
    row = extras["rows"][0]
    omitted = f"; positions 0-{start - 1} of {len(tokens)} left out" if start else ""
    console.print(Text(f"logit lens: top next token per layer and position{omitted}", style="bold"))
    names = [f"{j}\n{_cell_token(t)}" for j, t in enumerate(tokens[start:], start)]
    table = Table("layer", *names, "target\nrank", show_edge=False)
    for column in table.columns:
        column.no_wrap = True
    for k, layer in enumerate(layers):
        cells = [f"{_cell_token(c[0][0])}\n{c[0][1]:.0%}" for c in extras["top"][k][start:]]
        table.add_row(str(layer), *cells, str(extras["target_rank"][0][k][row]))
    console.print(table)
    console.print(Text("(␣ a space, ↵ a line break; the percentage is the probability)"))


def _cell_token(token: str) -> str:
    shown = visible_token(token)
    return shown if len(shown) <= LENS_CELL else shown[: LENS_CELL - 1] + "…"


def lens_html(exp: Explanation) -> str:
    extras = exp.extras
    if "top" not in extras:
        return ""
    esc = html.escape
    tokens, layers = extras["tokens"], extras["layers"]
    row = extras["rows"][0]
    head = "".join(f"<th>{esc(visible_token(t))}</th>" for t in tokens)
    body = []
    for k, layer in enumerate(layers):
        cells = "".join(
            f'<td style="background:rgba(40,140,60,{c[0][1]:.3f})" '
            f'title="{esc(", ".join(f"{visible_token(t)} {p:.3f}" for t, p in c))}">'
            f"{esc(visible_token(c[0][0]))}</td>"
            for c in extras["top"][k]
        )
        body.append(f"<tr><th>{layer}</th>{cells}<td>{extras['target_rank'][0][k][row]}</td></tr>")
    return (
        "<style>.lens td,.lens th{font-family:ui-monospace,monospace;font-size:.75em;"
        "padding:1px 4px;white-space:pre}</style>"
        "<h2>logit lens: top next token per layer (rows) and position (columns)</h2>"
        f'<table class="lens"><tr><th>layer</th>{head}<th>target rank</th></tr>'
        f"{''.join(body)}</table>"
    )


def negative_selectivity_layers(result: ProbeResult) -> list[int]:
    return [r.layer for r in result.layers if r.selectivity < 0]


def probe_warning(result: ProbeResult) -> str | None:
    """One line when some layer's selectivity is negative, else None."""
    layers = negative_selectivity_layers(result)
    if not layers:
        return None
    where = ", ".join(str(layer) for layer in layers)
    return (
        f"warning: selectivity is negative at layer{'s' if len(layers) > 1 else ''} {where}: "
        "the probe fits the control task's random labels better than the real ones, so its "
        "accuracy there shows memorisation, not the property"
    )


def probe_table(result: ProbeResult) -> Table:
    """Accuracy, control accuracy, selectivity and the majority baseline per layer; column
    headers say which direction is better and negative selectivities are flagged."""
    table = Table(
        "layer",
        f"accuracy ({better('accuracy')} is better)",
        f"control ({better('control_accuracy')} is better)",
        f"selectivity ({better('selectivity')} is better)",
        "majority label",
        title=(
            f"{result.task} on {result.model}: {result.n_examples} examples, {result.split} split "
            f"({result.layers[0].n_train} train / {result.layers[0].n_test} test)"
        ),
    )
    for r in result.layers:
        selectivity = Text(f"{r.selectivity:+.3f}")
        if r.selectivity < 0:
            selectivity = Text(f"{r.selectivity:+.3f} (negative)", style="bold red")
        table.add_row(
            str(r.layer),
            f"{r.accuracy:.3f}",
            f"{r.control_accuracy:.3f}",
            selectivity,
            f"{r.majority:.3f}",
        )
    return table


def render_probe_terminal(result: ProbeResult, console: Console | None = None) -> None:
    """The probe table, and the negative-selectivity warning where there is one."""
    console = console or Console()
    console.print(probe_table(result))
    warning = probe_warning(result)
    if warning:
        console.print(Text(warning, style="bold red"))
