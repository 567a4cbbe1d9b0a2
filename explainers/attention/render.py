"""Renderings of attention explanations: a head view and a layer-by-head grid.

Head view: for one layer, each head's weights from the explained position over the tokens
(the terminal shows one coloured line per head; HTML adds each head's full token-to-token
matrix). Layer-by-head grid: every layer (rows) and head (columns) at once; each cell is
the explained position's distribution over tokens (terminal: its top token and weight).
Methods without heads (rollout, flow) show their per-layer rows or their final map.
Every token is escaped: model text is data, never markup.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from explainers.tokens import inline_token

if TYPE_CHECKING:
    from explainers.explanation import Explanation

GRID_MAX_TOKENS = 48  # the HTML grid's strips get unreadable beyond this; keep the last ones


def _query_row(exp: Explanation) -> int:
    rows = exp.extras.get("rows") or [len(exp.extras.get("tokens", [])) - 1]
    return int(rows[0])


def _view_layer(exp: Explanation) -> int:
    layer = exp.params.get("layer")
    n_layers = int(exp.extras.get("n_layers") or 1)
    return int(layer) if isinstance(layer, int) else n_layers - 1


def render_attention_terminal(exp: Explanation, console: Console | None = None) -> None:
    """Print the head view of the explanation's layer and the layer-by-head grid."""
    console = console or Console()
    extras = exp.extras
    tokens = extras.get("tokens") or []
    query = _query_row(exp)
    if not tokens:
        return
    heads, layers = extras.get("heads"), extras.get("layers")
    console.print(Text(f"query position {query}: {tokens[query]!r}", style="bold cyan"))
    if heads is not None:
        layer = _view_layer(exp)
        console.print(Text(f"head view, layer {layer}", style="bold"))
        for h, matrix in enumerate(heads[layer]):
            console.print(_token_line(f"  head {h:>2} ", tokens, matrix[query]))
        console.print(Text("layer-by-head grid: top token (weight) of the query row", style="bold"))
        table = Table("layer", *[f"h{h}" for h in range(len(heads[0]))], show_edge=False)
        for index, layer_heads in enumerate(heads):
            table.add_row(str(index), *[_top_cell(tokens, m[query]) for m in layer_heads])
        console.print(table)
    elif layers is not None:
        console.print(Text("by layer: the query row through each layer", style="bold"))
        for index, matrix in enumerate(layers):
            console.print(_token_line(f"  layer {index:>2} ", tokens, matrix[query]))
    elif extras.get("omitted"):
        note = f"(maps left out to keep the record small: {', '.join(extras['omitted'])})"
        console.print(Text(note, style="dim"))


def _token_line(label: str, tokens: list[str], weights: list[float]) -> Text:
    values = np.asarray(weights, dtype=float)
    scale = float(values.max()) if values.size and values.max() > 0 else 1.0
    line = Text(label, style="dim")
    for token, w in zip(tokens, values):
        level = int(40 + 215 * min(1.0, w / scale))
        line.append(inline_token(token), style=f"on rgb({level},40,40)" if w / scale > 0.05 else "")
    return line


def _top_cell(tokens: list[str], weights: list[float]) -> str:
    j = int(np.argmax(weights))
    token = inline_token(tokens[j]).strip() or repr(tokens[j])
    return f"{token[:8]} {weights[j]:.2f}"


def attention_html(exp: Explanation) -> str:
    """HTML sections (no page around them) for the head view and the layer-by-head grid."""
    extras = exp.extras
    tokens = extras.get("tokens") or []
    if not tokens:
        return ""
    query = _query_row(exp)
    heads, layers, final = extras.get("heads"), extras.get("layers"), extras.get("map")
    parts = [
        "<style>.att td{padding:0;width:9px;height:9px}.att{border-collapse:collapse}"
        ".strip{display:flex}.strip span{width:5px;height:9px;display:inline-block}"
        ".grid td{padding:2px}.grid th{font-size:.75em;color:#666}"
        ".hv{display:inline-block;margin:4px;vertical-align:top}"
        ".lbl{font-size:.75em;color:#444}</style>",
        f"<h2>query position {query}: <code>{_esc(tokens[query])}</code></h2>",
    ]
    if heads is not None:
        layer = _view_layer(exp)
        parts.append(f"<h2>head view, layer {layer}</h2>")
        for h, matrix in enumerate(heads[layer]):
            parts.append(
                f'<div class="hv"><div class="lbl">head {h}</div>{_matrix(tokens, matrix)}</div>'
            )
        parts.append("<h2>layer-by-head grid (query row over tokens)</h2>")
        parts.append(_grid(tokens, [[m[query] for m in lh] for lh in heads], "h"))
    elif layers is not None:
        parts.append("<h2>by layer (query row over tokens)</h2>")
        parts.append(_grid(tokens, [[m[query]] for m in layers], "map"))
    if final is not None:
        parts.append(f"<h2>token-to-token map ({_esc(exp.method)})</h2>{_matrix(tokens, final)}")
    return "\n".join(parts)


def _esc(token: str) -> str:
    return html.escape(inline_token(token))


def _matrix(tokens: list[str], matrix: list[list[float]]) -> str:
    values = np.asarray(matrix, dtype=float)
    scale = float(values.max()) if values.size and values.max() > 0 else 1.0
    rows = []
    for i, row in enumerate(values):
        cells = "".join(
            f'<td style="background:rgba(220,40,40,{w / scale:.3f})" '
            f'title="{_esc(tokens[i])} -> {_esc(tokens[j])}: {w:.4f}"></td>'
            for j, w in enumerate(row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="att">{"".join(rows)}</table>'


def _grid(tokens: list[str], cells: list[list[list[float]]], label: str) -> str:
    start = max(0, len(tokens) - GRID_MAX_TOKENS)
    header = "".join(f"<th>{label}{h}</th>" for h in range(len(cells[0])))
    body = []
    for layer, row in enumerate(cells):
        strips = []
        for weights in row:
            values = np.asarray(weights[start:], dtype=float)
            scale = float(values.max()) if values.size and values.max() > 0 else 1.0
            spans = "".join(
                f'<span style="background:rgba(220,40,40,{w / scale:.3f})" '
                f'title="{_esc(tokens[start + j])}: {w:.4f}"></span>'
                for j, w in enumerate(values)
            )
            strips.append(f'<td><div class="strip">{spans}</div></td>')
        body.append(f"<tr><th>layer {layer}</th>{''.join(strips)}</tr>")
    return f'<table class="grid"><tr><th></th>{header}</tr>{"".join(body)}</table>'
