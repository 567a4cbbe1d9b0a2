"""Renderings of an Explanation: coloured tokens in a terminal (rich) and self-contained HTML.

Scores are coloured per row, scaled by the row's largest absolute score: red pushes towards
the target, blue pushes away. Every token is escaped: model text is data, never markup.
Tokens are shown as the characters they form (`explainers.tokens.readable_columns`). Where
the output is not a terminal (a pipe, a file), colours would be lost, so the scores are
printed as a plain-text table instead (`score_table`).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from explainers.explanation import (
    DEFAULT_TOLERANCE,
    Renderers,
    completeness_tolerance,
    set_renderers,
)
from explainers.heatmap import explanation_heatmap_html
from explainers.tokens import inline_token, readable_columns

if TYPE_CHECKING:
    import numpy as np

    from explainers.explanation import Explanation


def _shade(score: float, scale: float) -> float:
    return 0.0 if scale <= 0 else max(-1.0, min(1.0, score / scale))


def completeness_line(exp: Explanation, row: int, tolerance: float) -> str | None:
    if exp.expected is None or exp.delta is None:
        return None
    expected, delta = exp.expected[row], exp.delta[row]
    total = expected + delta
    flag = "ok" if abs(delta) <= completeness_tolerance(expected, tolerance) else "WARNING"
    return (
        f"completeness: sum of scores {total:+.4f} vs f(input)-f(baseline) {expected:+.4f}, "
        f"delta {delta:+.4f} [{flag}]"
    )


def warning_lines(exp: Explanation, tolerance: float = DEFAULT_TOLERANCE) -> list[str]:
    """What every rendering says about an explanation that is not to be taken as it is: the
    method's own warnings (with its status), or else rows that miss completeness."""
    if exp.warnings:
        return [f"warning ({exp.status}): {w}" for w in exp.warnings]
    incomplete = exp.incomplete_rows(tolerance)
    if not incomplete:
        return []
    return [
        f"warning: {len(incomplete)} of {len(exp.target_tokens)} rows miss completeness "
        f"by more than {tolerance:.0%}"
    ]


def render_terminal(
    exp: Explanation, console: Console | None = None, tolerance: float = DEFAULT_TOLERANCE
) -> None:
    console = console or Console()
    params = ", ".join(f"{k}={v}" for k, v in exp.params.items())
    header = f"{exp.method} ({exp.category}) on {exp.model_label}"
    if exp.baseline:
        header += f", baseline={exp.baseline}"
    console.print(Text(header + (f", {params}" if params else ""), style="bold"))
    contrast = exp.extras.get("contrast_tokens")
    tokens, all_scores = readable_columns(exp)
    plain = not console.is_terminal
    if plain:
        console.print(score_table(exp, tokens, all_scores), soft_wrap=True, markup=False)
    for row, target in enumerate(exp.target_tokens or [""]):
        scores = all_scores[row]
        check = completeness_line(exp, row, tolerance)
        if plain:
            if check:
                console.print(f"target {row + 1}: {check}", soft_wrap=True, markup=False)
            continue
        scale = float(abs(scores).max()) if scores.size else 0.0
        label = f"target {row + 1}/{len(exp.target_tokens)}: {target!r}"
        if contrast:
            label += f" vs contrast {contrast[row]!r}"
        console.print(Text(label, style="bold cyan"))
        line = Text()
        for token, score in zip(tokens, scores):
            s = _shade(float(score), scale)
            level = int(40 + 215 * abs(s))
            colour = f"rgb({level},40,40)" if s >= 0 else f"rgb(40,40,{level})"
            line.append(inline_token(token), style=f"on {colour}" if abs(s) > 0.05 else "")
        console.print(line)
        top = ", ".join(f"{tokens[i]!r} {scores[i]:+.3f}" for i in (-scores).argsort()[:3])
        console.print(Text(f"  top: {top}", style="dim"))
        if check:
            console.print(Text("  " + check, style="red" if "WARNING" in check else "green"))
    for line in warning_lines(exp, tolerance):
        console.print(Text(line, style="bold red"))
    if exp.category == "attention":
        from explainers.attention.render import render_attention_terminal

        render_attention_terminal(exp, console)
    elif exp.method == "logit_lens":
        from explainers.probing.render import render_lens_terminal

        render_lens_terminal(exp, console)


def score_table(exp: Explanation, tokens: list[str], scores: np.ndarray) -> str:
    """The scores as plain text: one line per input token (or word), one column per target
    (`target - contrast` with a contrast), scores with 4 decimals."""
    contrast = exp.extras.get("contrast_tokens")
    heads = [
        repr(t) + (f" - {contrast[i]!r}" if contrast else "")
        for i, t in enumerate(exp.target_tokens or ["score"])
    ]
    labels = [repr(t) for t in tokens]
    first = max([len(exp.aggregation), *map(cell_len, labels)])  # an emoji takes two cells
    widths = [max(9, cell_len(h)) for h in heads]
    lines = [" ".join([exp.aggregation.ljust(first), *(h.rjust(w) for h, w in zip(heads, widths))])]
    for i, label in enumerate(labels):
        cells = (f"{scores[row, i]:+.4f}".rjust(w) for row, w in enumerate(widths))
        lines.append(" ".join([label + " " * (first - cell_len(label)), *cells]))
    return "\n".join(lines)


def render_html(exp: Explanation, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """A self-contained page (inline CSS, no scripts) with one heatmap per target, drawn by
    `explainers.heatmap` as the dashboard draws it (wrapped at the text's line breaks, in
    sections where the explanation has them, with a colour scale)."""
    esc = html.escape
    rows_html = []
    for row, target in enumerate(exp.target_tokens or [""]):
        check = completeness_line(exp, row, tolerance)
        check_html = (
            f'<div class="check {"bad" if "WARNING" in check else "good"}">{esc(check)}</div>'
            if check
            else ""
        )
        rows_html.append(
            f'<div class="row"><div class="target">target {row + 1}: '
            f"<code>{esc(repr(target))}</code></div>"
            f"{explanation_heatmap_html(exp, row)}{check_html}</div>"
        )
    params = esc(", ".join(f"{k}={v}" for k, v in exp.params.items()))
    title = esc(f"{exp.method} explanation")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.row {{ margin: 1em 0; }} .target {{ font-weight: 600; margin-bottom: .3em; }}
.check {{ font-size: .85em; margin-top: .3em; }} .bad {{ color: #b00; }} .good {{ color: #070; }}
.meta {{ color: #666; font-size: .9em; }}
</style></head><body>
<h1>{title}</h1>
<p class="meta">model {esc(exp.model_label)} &middot; category {esc(exp.category)} &middot;
baseline {esc(str(exp.baseline))} &middot; {params} &middot; {exp.seconds:.2f} s</p>
<p class="meta">red: pushes towards the target; blue: away. Hover a token for its score.</p>
{"".join(f'<p class="check bad">{esc(w)}</p>' for w in warning_lines(exp, tolerance))}
{"".join(rows_html)}
{_category_html(exp)}
</body></html>
"""


def _category_html(exp: Explanation) -> str:
    """Extra sections some categories draw from their extras (attention maps, logit lens)."""
    if exp.category == "attention":
        from explainers.attention.render import attention_html

        return attention_html(exp)
    if exp.method == "logit_lens":
        from explainers.probing.render import lens_html

        return lens_html(exp)
    return ""


# `Explanation.to_html()` and `.show()` draw with these (explanation.py imports no renderer).
set_renderers(Renderers(html=render_html, terminal=render_terminal))
