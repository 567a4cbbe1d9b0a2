"""Rendering of the logit lens: a layer-by-position table of each layer's top next token,
with the target's rank per layer (the classic logit-lens picture). Tokens are escaped."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from explainers.base import Explanation

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
