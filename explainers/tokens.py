"""Tokens as a person reads them: the characters that byte-level pieces form.

Byte-level BPE (GPT-2, Llama 3, SmolLM) and byte-fallback SentencePiece split a character
that is not in the vocabulary into pieces of its UTF-8 bytes: "🍕" is three tokens, and each
decoded on its own is "\ufffd" (the replacement character), which is what a reader saw. Here a
run of pieces is decoded together until it forms whole characters, and pieces are also kept
together where they form one user-perceived character (a grapheme cluster, Unicode UAX #29:
an emoji with a skin tone or a ZWJ family, a letter with a combining accent).

Explanations keep one column per model token, because metrics and position-based methods
(attention, patching) need them; a token's label is its group's text on the group's first
token and "" on the others, so labels still join into the decoded text and word aggregation
reads whole words. Renderings then merge each group into one cell whose score is the sum of
its tokens' scores (`merge_pieces`), with the groups recorded in
`Explanation.extras[PIECES_KEY]`.

    >>> from transformers import AutoTokenizer                # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> display_tokens(tok, tok("pizza 🍕")["input_ids"])      # doctest: +SKIP
    (['pizza', ' 🍕'], [[0], [1, 2, 3]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import regex

if TYPE_CHECKING:
    from explainers.explanation import Explanation

REPLACEMENT = "\ufffd"
MAX_PIECES = 8  # a UTF-8 character is at most 4 bytes; a run of pieces may chain two
PIECES_KEY = "character_pieces"  # extras: [first, end) token ranges shown as one character


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """(labels, groups): one label per group of token positions that forms whole characters.

    A token that decodes to whole characters is a group of its own, labelled as
    `tokenizer.decode([id])` labels it; pieces of a character are decoded together, and
    groups that split one grapheme cluster are joined. A piece that never completes (an
    invalid byte sequence, a truncated input) stays alone and keeps its "\ufffd".
    """
    ids = [int(i) for i in ids]
    labels: list[str] = []
    groups: list[list[int]] = []
    start = 0
    while start < len(ids):
        label, end = tokenizer.decode([ids[start]]), start + 1
        if REPLACEMENT in label:
            for stop in range(start + 2, min(len(ids), start + MAX_PIECES) + 1):
                joined = tokenizer.decode(ids[start:stop])
                if REPLACEMENT not in joined:
                    label, end = joined, stop
                    break
        labels.append(label)
        groups.append(list(range(start, end)))
        start = end
    return _join_graphemes(labels, groups)


def _join_graphemes(
    labels: list[str], groups: list[list[int]]
) -> tuple[list[str], list[list[int]]]:
    """Join neighbouring groups whose boundary falls inside one grapheme cluster."""
    text = "".join(labels)
    boundaries = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
    out_labels: list[str] = []
    out_groups: list[list[int]] = []
    position = 0
    for label, group in zip(labels, groups):
        if out_labels and label and position not in boundaries:
            out_labels[-1] += label
            out_groups[-1].extend(group)
        else:
            out_labels.append(label)
            out_groups.append(list(group))
        position += len(label)
    return out_labels, out_groups


def token_labels(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """(one label per token, [first, end) ranges of the groups that span several tokens).

    A group's text sits on its first token and the others are "" (see the module's note).
    """
    labels, groups = display_tokens(tokenizer, ids)
    per_token: list[str] = []
    pieces: list[list[int]] = []
    for label, group in zip(labels, groups):
        per_token.extend([label] + [""] * (len(group) - 1))
        if len(group) > 1:
            pieces.append([group[0], group[-1] + 1])
    return per_token, pieces


def merge_pieces(
    tokens: Sequence[str], scores: np.ndarray, pieces: Sequence[Sequence[int]] | None
) -> tuple[list[str], np.ndarray]:
    """Tokens and [rows, tokens] scores with each [first, end) range of `pieces` as one
    column: its labels joined, its scores summed."""
    scores = np.asarray(scores, dtype=np.float64)
    if not pieces:
        return list(tokens), scores
    starts = {int(first): int(end) for first, end in pieces}
    labels: list[str] = []
    columns: list[np.ndarray] = []
    position = 0
    while position < len(tokens):
        end = starts.get(position, position + 1)
        labels.append("".join(tokens[position:end]))
        columns.append(scores[:, position:end].sum(axis=1))
        position = end
    return labels, np.stack(columns, axis=1) if columns else scores[:, :0]


def readable_columns(exp: Explanation) -> tuple[list[str], np.ndarray]:
    """The explanation's input as a person reads it: token pieces of one character merged
    (scores summed); word-level explanations are already whole words."""
    pieces = exp.extras.get(PIECES_KEY) if exp.aggregation == "token" else None
    return merge_pieces(exp.input_tokens, exp.scores, pieces)


# How table cells show whitespace: a blank cell would hide a space or line-break token.
VISIBLE_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "→", "\r": "␍"})


def visible_token(token: str) -> str:
    """`token` for a table cell: spaces as ␣, line breaks as ↵, tabs as →."""
    return token.translate(VISIBLE_WHITESPACE)


def inline_token(token: str) -> str:
    """`token` inside a line of running text: line breaks and tabs escaped (\\n, \\t) so
    that one token cannot break the line; spaces stay spaces."""
    return token.replace("\n", "\\n").replace("\t", "\\t")
