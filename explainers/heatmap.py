"""Token heatmaps as HTML: the one builder behind every browser view of attribution scores
(the dashboard's pages and `Explanation.to_html()`), so that both always show the same.

The heatmap reads like the text it explains: tokens flow as the text does, a line break in
the text (shown as ⏎) ends the line, and long lines wrap at the width of the page instead of
running off it. Where the tokens carry sections (an agent prompt's instructions, tips,
history, observation and admissible commands: `Explanation.extras["token_segments"]`, written
by `agents.explain_step`), each run of a section is boxed and labelled, and a summary line
gives every section's total. A colour scale says what the colours mean in numbers: red
pushes towards the target, blue away, full colour at the row's largest absolute score.

Every token is HTML-escaped and only inline styles are used (no scripts, no classes), so a
fragment is safe inside any page that shows model text.

    >>> from explainers.heatmap import token_heatmap_html
    >>> html = token_heatmap_html(["Tips:", "\\n", "- eat"], [0.1, 0.0, -0.4])
    >>> "⏎" in html and "-0.4000" in html
    True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from explainers.tokens import PIECES_KEY, merge_pieces

if TYPE_CHECKING:
    from explainers.explanation import Explanation

SEGMENTS_KEY = "token_segments"  # extras: one section name per input token
OFFSETS_KEY = "token_offsets"  # extras: [start, end) of each input token in input_text
POSITIVE = (220, 40, 40)
NEGATIVE = (40, 90, 220)
NEWLINE = "⏎"

_TEXT = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;line-height:1.75;"
    "white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;max-width:100%"
)
_LABEL = "font-family:system-ui,sans-serif;font-size:12px;color:#555"


def shade(score: float, scale: float) -> float:
    """The score as a signed colour strength in [-1, 1] (0 where the scale is 0)."""
    return 0.0 if scale <= 0 else max(-1.0, min(1.0, score / scale))


def colour(score: float, scale: float, strength: float = 1.0) -> str:
    """The CSS background of a score: red for positive, blue for negative; `strength` caps
    the opacity (labels on the colour stay readable)."""
    s = shade(score, scale)
    r, g, b = POSITIVE if s >= 0 else NEGATIVE
    return f"rgba({r},{g},{b},{strength * abs(s):.3f})"


def colour_scale_html(scale: float, what: str = "attribution") -> str:
    """A legend: the colour gradient from -scale to +scale with its values written under it."""
    r, g, b = NEGATIVE
    pr, pg, pb = POSITIVE
    gradient = f"linear-gradient(to right,rgb({r},{g},{b}),#fff,rgb({pr},{pg},{pb}))"
    ticks = "".join(
        f'<span style="flex:1;text-align:{align}">{value:+.3g}</span>'
        for value, align in ((-scale, "left"), (0.0, "center"), (scale, "right"))
    )
    return (
        f'<div style="{_LABEL};max-width:360px;margin:6px 0">'
        f"<div>{html.escape(what)}: blue pushes away from the target, red towards it</div>"
        f'<div style="height:10px;border:1px solid #ccc;background:{gradient}"></div>'
        f'<div style="display:flex">{ticks}</div></div>'
    )


def _token_html(token: str, score: float, scale: float) -> str:
    # A newline is drawn as a visible mark and kept as a real line break (the block is
    # pre-wrap), so the heatmap breaks where the text does.
    text = html.escape(token).replace("\n", NEWLINE + "\n")
    return (
        f'<span style="background:{colour(score, scale)};border-radius:2px" '
        f'title="{score:+.4f}">{text}</span>'
    )


def section_totals(
    scores: Sequence[float], sections: Sequence[str | None]
) -> dict[str | None, float]:
    """Each section's summed score, in order of first appearance."""
    totals: dict[str | None, float] = {}
    for score, name in zip(scores, sections):
        totals[name] = totals.get(name, 0.0) + float(score)
    return totals


def token_heatmap_html(
    tokens: Sequence[str],
    scores: Sequence[float],
    sections: Sequence[str | None] | None = None,
    *,
    scale: float | None = None,
    legend: bool = True,
) -> str:
    """One row of scores over `tokens` as an HTML fragment.

    Args:
        tokens: the text as tokens (their concatenation is the text).
        scores: one score per token.
        sections: optionally one section name per token; runs of a section are boxed and
            labelled, with every section's total above.
        scale: the score of full colour (default: the largest absolute score).
        legend: draw the colour scale under the tokens.
    """
    values = [float(s) for s in scores]
    if scale is None:
        scale = max((abs(v) for v in values), default=0.0)
    parts: list[str] = []
    if sections is not None and len(sections) == len(values):
        totals = section_totals(values, sections)
        top = max((abs(v) for v in totals.values()), default=0.0)
        chips = "".join(
            f'<span style="background:{colour(total, top, 0.45)};border:1px solid #ccc;'
            f'border-radius:3px;padding:0 6px;margin:0 6px 4px 0;display:inline-block">'
            f"{html.escape(str(name))} {total:+.4f}</span>"
            for name, total in totals.items()
        )
        parts.append(f'<div style="{_LABEL}">section totals: {chips}</div>')
        start = 0
        while start < len(values):
            end = start
            while end < len(values) and sections[end] == sections[start]:
                end += 1
            block = "".join(
                _token_html(t, v, scale) for t, v in zip(tokens[start:end], values[start:end])
            )
            subtotal = sum(values[start:end])
            parts.append(
                '<div style="border-left:3px solid #bbb;padding-left:8px;margin:2px 0">'
                f'<div style="{_LABEL}">{html.escape(str(sections[start]))} '
                f"({end - start} tokens, {subtotal:+.4f})</div>"
                f'<div style="{_TEXT}">{block}</div></div>'
            )
            start = end
    else:
        block = "".join(_token_html(t, v, scale) for t, v in zip(tokens, values))
        parts.append(f'<div style="{_TEXT}">{block}</div>')
    if legend:
        parts.append(colour_scale_html(scale))
    return f'<div style="max-width:100%;overflow-wrap:anywhere">{"".join(parts)}</div>'


def text_labels(exp: Explanation) -> list[str]:
    """One label per input token, the characters of the input it stands for. Where the
    explanation records each token's characters (`extras["token_offsets"]`), a label runs
    from its token's first character to the next token's (spaces and line breaks after a
    token belong to it, so a line ends with its last token and sections start on a new
    line); the labels join into the input exactly. A special token the tokenizer added (no
    characters) keeps its own label. Without offsets, tokens are aligned to the input
    where they can be."""
    offsets = exp.extras.get(OFFSETS_KEY)
    if not offsets or exp.aggregation != "token" or len(offsets) != len(exp.input_tokens):
        return _aligned(exp.input_tokens, exp.input_text)
    starts = [int(a) if int(b) > int(a) else None for a, b in offsets]
    return _spans(exp.input_tokens, exp.input_text, starts)


def _spans(tokens: Sequence[str], text: str, starts: Sequence[int | None]) -> list[str]:
    """Labels from each token's first character (None: a token without characters) to the
    next token's; the first label also takes what precedes it, the last what follows it."""
    labels: list[str] = []
    begun, previous = False, -1
    for i, (token, start) in enumerate(zip(tokens, starts)):
        if start is None:
            labels.append(token)
            continue
        if start <= previous:  # a byte piece of the character the previous token began
            labels.append("")
            continue
        following = (s for s in starts[i + 1 :] if s is not None and s > start)
        end = next(following, len(text))
        labels.append(text[0 if not begun else start : end])
        begun, previous = True, start
    return labels


def _aligned(tokens: Sequence[str], text: str) -> list[str]:
    """Tokens given back the characters of `text` their decoding dropped (a tokenizer that
    splits on whitespace decodes "the milk" as "the", "milk"). Only where every token
    follows the previous one in the text with nothing but whitespace between them; else
    the tokens as they are."""
    starts: list[int | None] = []
    cursor = 0
    for token in tokens:
        at = text.find(token, cursor) if token else cursor
        if at < 0 or text[cursor:at].strip():  # only whitespace may have been dropped
            return list(tokens)
        starts.append(at if token else None)
        cursor = at + len(token)
    return _spans(tokens, text, starts)


def readable_sections(exp: Explanation) -> tuple[list[str], np.ndarray, list[str] | None]:
    """The explanation's tokens as a person reads them (pieces of one character merged,
    scores summed, as `explainers.tokens.readable_columns`; the text's own characters
    where the explanation records offsets), with their sections where it records one per
    token (a merged cell takes its first token's section)."""
    pieces = exp.extras.get(PIECES_KEY) if exp.aggregation == "token" else None
    tokens, scores = merge_pieces(text_labels(exp), exp.scores, pieces)
    sections = exp.extras.get(SEGMENTS_KEY)
    if sections is None or exp.aggregation != "token" or len(sections) != len(exp.input_tokens):
        return tokens, scores, None
    ends = {int(first): int(end) for first, end in pieces or []}
    firsts, position = [], 0
    while position < len(exp.input_tokens):
        firsts.append(position)
        position = ends.get(position, position + 1)
    return tokens, scores, [sections[p] for p in firsts]


def explanation_heatmap_html(exp: Explanation, row: int = 0) -> str:
    """Row `row` of an explanation (one target token) as a heatmap fragment, in sections
    where the explanation has them."""
    tokens, scores, sections = readable_sections(exp)
    return token_heatmap_html(tokens, scores[row], sections)
