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

if TYPE_CHECKING:
    from explainers.base import Explanation
    from explainers.probing.probes import ProbeResult

LENS_POSITIONS = 10  # the last positions shown: where the prediction forms


def _visible(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")


def render_lens_terminal(exp: Explanation, console: Console | None = None) -> None:
    extras = exp.extras
    if "top" not in extras:
        return
    console = console or Console()
    tokens, layers = extras["tokens"], extras["layers"]
    start = max(0, len(tokens) - LENS_POSITIONS)
    row = extras["rows"][0]
    console.print(Text("logit lens: top next token per layer and position", style="bold"))
    names = [_visible(t)[:10] for t in tokens[start:]]
    table = Table("layer", *names, "target rank", show_edge=False)
    for k, layer in enumerate(layers):
        cells = [f"{_visible(c[0][0])[:10]} {c[0][1]:.2f}" for c in extras["top"][k][start:]]
        table.add_row(str(layer), *cells, str(extras["target_rank"][0][k][row]))
    console.print(table)


def lens_html(exp: Explanation) -> str:
    extras = exp.extras
    if "top" not in extras:
        return ""
    esc = html.escape
    tokens, layers = extras["tokens"], extras["layers"]
    row = extras["rows"][0]
    head = "".join(f"<th>{esc(_visible(t))}</th>" for t in tokens)
    body = []
    for k, layer in enumerate(layers):
        cells = "".join(
            f'<td style="background:rgba(40,140,60,{c[0][1]:.3f})" '
            f'title="{esc(", ".join(f"{_visible(t)} {p:.3f}" for t, p in c))}">'
            f"{esc(_visible(c[0][0]))}</td>"
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
