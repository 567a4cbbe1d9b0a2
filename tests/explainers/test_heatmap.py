"""The one HTML token heatmap (dashboard and `Explanation.to_html()`): it reads like the
text (line breaks kept and marked, long lines free to wrap), groups an agent prompt by
section with totals, states its colour scale in numbers, and escapes every token."""

from __future__ import annotations

import re

import pytest

from explainers.explanation import Explanation
from explainers.heatmap import (
    explanation_heatmap_html,
    section_totals,
    text_labels,
    token_heatmap_html,
)


def prompt_explanation(**extras) -> Explanation:
    text = "Goal: eat\nTips:\n- <b>cook</b>\n\nok"
    tokens = ["Goal:", " eat", "\n", "Tips:", "\n", "-", " <b>cook</b>", "\n\n", "ok"]
    return Explanation(
        method="ig",
        category="attribution",
        model="m",
        input_text=text,
        input_tokens=tokens,
        target_tokens=[" take", " milk"],
        scores=[[0.1, 0.2, 0.0, -0.3, 0.0, 0.05, 0.4, 0.0, 0.1], [0.0] * 9],
        extras=extras,
    )


def test_line_breaks_are_marked_and_kept_so_the_heatmap_wraps_like_the_text():
    html = token_heatmap_html(["a", "\n", "b c"], [0.5, 0.0, -1.0])
    assert "⏎\n" in html and "white-space:pre-wrap" in html
    assert "overflow-wrap:anywhere" in html  # a very long line still wraps
    assert "white-space:pre;" not in html  # never one unbreakable line
    # The colour scale states its values: the largest absolute score at both ends.
    assert "-1" in html and "+1" in html and "blue pushes away" in html


def test_tokens_are_escaped():
    html = explanation_heatmap_html(prompt_explanation())
    assert "<b>" not in html and "&lt;b&gt;cook&lt;/b&gt;" in html


def test_sections_are_boxed_with_their_totals():
    sections = ["instructions"] * 3 + ["tips"] * 5 + ["instructions"]
    exp = prompt_explanation(token_segments=sections)
    html = explanation_heatmap_html(exp)
    assert section_totals(exp.scores[0], sections) == pytest.approx(
        {"instructions": 0.4, "tips": 0.15}
    )
    chips = re.findall(r">(instructions|tips) ([+-][0-9.]+)</span>", html)
    assert chips == [("instructions", "+0.4000"), ("tips", "+0.1500")]
    assert "tips (5 tokens, +0.1500)" in html
    # Another target row is the same tokens with its own scores.
    assert 'title="+0.0000"' in explanation_heatmap_html(exp, 1)


def test_offsets_give_the_texts_own_characters_even_when_decoding_drops_them():
    # A whitespace-splitting tokenizer decodes without spaces; offsets restore them, each
    # token keeping the whitespace after it (so sections start on a new line).
    exp = Explanation(
        method="ig",
        category="attribution",
        model="m",
        input_text="Tips:\n- eat now",
        input_tokens=["<s>", "Tips:", "-", "eat", "now"],
        target_tokens=["x"],
        scores=[[0, 1, 2, 3, 4]],
        extras={"token_offsets": [[0, 0], [0, 5], [6, 7], [8, 11], [12, 15]]},
    )
    assert text_labels(exp) == ["<s>", "Tips:\n", "- ", "eat ", "now"]
    assert "".join(text_labels(exp)[1:]) == exp.input_text
    # Without offsets, tokens are aligned to the text where only whitespace was dropped.
    exp.extras = {}
    assert text_labels(exp) == ["<s>", "Tips:", "-", "eat", "now"]  # "<s>" is not in it
    exp.input_tokens[0] = ""
    assert text_labels(exp) == ["", "Tips:\n", "- ", "eat ", "now"]


def test_the_html_export_draws_the_same_heatmap():
    exp = prompt_explanation(token_segments=["instructions"] * 3 + ["tips"] * 6)
    page = exp.to_html()
    for row in range(2):
        assert explanation_heatmap_html(exp, row) in page
