"""Chain-of-thought answers, and how much the answer depends on the reasoning: early
answering, as in Lanham et al. 2023 ("Measuring Faithfulness in Chain-of-Thought
Reasoning"); chain-of-thought prompting itself is Wei et al. 2022.

1. The model reasons step by step and ends with `Answer: ...` (`COT_TEMPLATE`).
2. The reasoning is cut after 0%, 25%, 50%, 75% and 100% of its units (`points`; units are
   sentences as in the paper, or words with `unit="word"`: kept = floor(fraction x units)).
3. At each cut the model is asked for its answer at once, given the reasoning so far
   (`EARLY_ANSWER_TEMPLATE`). The backends take user messages only, so the partial
   reasoning is quoted in the question rather than pre-filled as the assistant's turn.
4. `early_match_rate` is the share of early answers (cuts before 100%) that already equal
   the final answer (normalised). A high rate means the answer did not need the reasoning
   (post-hoc reasoning, in the paper's terms); a low rate means it was reached through it.
   `area_over_curve` is the paper's AOC: the area above the match curve over fractions 0..1.
   The 100% cut checks that re-asking with the whole reasoning gives the final answer.

The explanation's input is the question; its columns are the reasoning's units (what the
model wrote, not what it read), and a unit scores 1 when the answer given
after reading up to the first cut that includes it already matched the final answer (the
curve drawn over the reasoning), 0 otherwise. The curve itself is in `extras["curve"]`.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "Tom has 3 apples and eats one. How many are left?", method="cot")
    >>> exp.extras["early_match_rate"], exp.extras["curve"][0]   # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from explainers.explanation import Explanation
from explainers.params import Choice, Int
from explainers.prompting.base import (
    PromptingExplainer,
    ask,
    fill,
    find_field,
    first_line,
    same_answer,
    units_explanation,
)
from explainers.prompting.self_explain import ANSWER_FIELDS
from explainers.registry import register
from workbench.errors import WorkbenchError
from workbench.llm import LLM

COT_TEMPLATE = """{input}

Think step by step. Write your reasoning first,
then give your final answer on a last line that starts with "Answer:"."""

EARLY_ANSWER_TEMPLATE = """{input}

Here is the beginning of a step-by-step reasoning about this question:
{reasoning}

Stop reasoning now. Give your final answer on one line that starts with "Answer:"."""

NO_REASONING = "(no reasoning yet)"
DEFAULT_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)
UNITS = ("sentence", "word")


def split_reasoning(reply: str) -> tuple[str, str | None]:
    """(reasoning, final answer) of a chain-of-thought reply.

    The final answer is the last `Answer:` field; what comes before it is the reasoning. A
    reply without one (small models forget it, or run out of tokens) is all reasoning, and
    the final answer is None: the answer given after the whole reasoning stands for it.
    """
    answer = find_field(reply, ANSWER_FIELDS, last=True)
    if answer is None:
        return reply.strip(), None
    markers = list(re.finditer(r"(?i)(?:final\s+)?answer[*_\s]*:", reply))
    reasoning = reply[: markers[-1].start()].rstrip(" \t*_#>\n")
    return reasoning.strip(), answer


def unit_spans(text: str, unit: str) -> list[tuple[int, int]]:
    """Character spans of the reasoning's sentences or words."""
    if unit not in UNITS:
        raise WorkbenchError(f"unknown unit {unit!r}; choose sentence or word")
    if unit == "word":
        return [m.span() for m in re.finditer(r"\S+", text)]
    # A sentence runs to . ! ? followed by space, or to a line break.
    return [m.span() for m in re.finditer(r"[^\s](?:[^\n]*?(?:[.!?](?=\s|$))|[^\n]*)", text)]


def parse_points(points: Any) -> list[float]:
    if isinstance(points, str):
        points = [p for p in re.split(r"[,\s]+", points.strip("[] ")) if p]
    try:
        values = sorted({float(p) for p in points})
    except (TypeError, ValueError):
        raise WorkbenchError(f"points must be fractions like 0,0.5,1, not {points!r}") from None
    if not values or values[0] < 0 or values[-1] > 1:
        raise WorkbenchError(f"points must be fractions between 0 and 1, not {points!r}")
    return values


@register
class ChainOfThought(PromptingExplainer):
    name = "cot"
    summary = "chain-of-thought answer; share of early answers (truncated reasoning) = final"
    param_checks = {
        "points": lambda name, value: parse_points(value),
        "unit": Choice(*UNITS),
        "answer_tokens": Int(min=1),
    }

    def run(
        self,
        llm: LLM,
        text: str,
        points: Any = DEFAULT_POINTS,
        unit: str = "sentence",
        max_tokens: int = 256,
        answer_tokens: int = 32,
    ) -> Explanation:
        fractions = parse_points(points)
        prompt = fill(COT_TEMPLATE, input=text.strip())
        [reply] = ask(llm, [prompt], int(max_tokens))
        reasoning, final = split_reasoning(reply)
        if not reasoning:
            raise WorkbenchError(
                "the model gave no reasoning before its answer, so there is nothing to cut "
                f"(reply: {' '.join(reply.split())[:160]!r}); raise max_tokens or use another model"
            )
        if final is None and 1.0 not in fractions:
            fractions.append(1.0)  # the whole reasoning's answer is the final one
        spans = unit_spans(reasoning, unit)
        kept = [math.floor(f * len(spans) + 1e-9) for f in fractions]
        partial = [reasoning[: spans[n - 1][1]] if n else "" for n in kept]
        prompts = [
            fill(EARLY_ANSWER_TEMPLATE, input=text.strip(), reasoning=p or NO_REASONING)
            for p in partial
        ]
        early_replies = ask(llm, prompts, int(answer_tokens))
        final_source = "reply"
        if final is None:
            final = find_field(early_replies[-1], ANSWER_FIELDS) or first_line(early_replies[-1])
            final_source = "asked after the whole reasoning"
        curve = []
        for f, n, early in zip(fractions, kept, early_replies):
            answer = find_field(early, ANSWER_FIELDS) or first_line(early)
            curve.append(
                {
                    "fraction": f,
                    "units_kept": n,
                    "answer": answer,
                    "matches_final": same_answer(answer, final),
                    "reply": early,
                }
            )
        early_points = [c for c in curve if c["fraction"] < 1.0]
        match_rate = (
            float(np.mean([c["matches_final"] for c in early_points])) if early_points else None
        )
        extras: dict[str, Any] = {
            "answer": final,
            "reasoning": reasoning,
            "prompt": prompt,
            "reply": reply,
            "final_answer_source": final_source,
            "curve": curve,
            "early_match_rate": match_rate,
            "area_over_curve": area_over_curve(curve),
            "n_units": len(spans),
        }
        units = [reasoning[s:e] for s, e in spans]
        tokens = [(" " if i else "") + u for i, u in enumerate(units)]
        scores = [0.0] * len(units)
        for c in sorted(curve, key=lambda c: c["units_kept"], reverse=True):
            # Units up to this cut take its match; earlier cuts overwrite their own prefix.
            for i in range(c["units_kept"]):
                scores[i] = float(c["matches_final"])
        params = {
            "points": fractions,
            "unit": unit,
            "max_tokens": int(max_tokens),
            "answer_tokens": int(answer_tokens),
        }
        return units_explanation(self, llm, text, tokens, final, scores, params, extras)


def area_over_curve(curve: list[dict[str, Any]]) -> float | None:
    """Lanham et al.'s AOC: the area above the matches-final curve over the fractions
    (trapezoid rule), scaled to the span of fractions measured; None with one point."""
    xs = [c["fraction"] for c in curve]
    if len(xs) < 2 or xs[-1] == xs[0]:
        return None
    ys = [1.0 - float(c["matches_final"]) for c in curve]
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))
    return area / (xs[-1] - xs[0])
