"""In-context demonstrations: how much each demonstration of a few-shot prompt contributes to
the answer (Brown et al. 2020 for few-shot prompting; leave-one-out and label flips as in
Min et al. 2022, "Rethinking the Role of Demonstrations: What Makes In-Context Learning
Work?", and Liu et al. 2023's survey of demonstration attribution).

The few-shot format: blocks separated by blank lines. A demonstration is a block with an
`Input:` line and a non-empty `Output:` line (the output runs to the end of the block); the
last block is the query, `Input: ...` with an empty `Output:` (or none); blocks before the
first demonstration are an instruction and stay in every prompt. `input_prefix` and
`output_prefix` change the field names (e.g. "Review:" / "Sentiment:").

    Classify the sentiment.

    Input: a great movie
    Output: positive

    Input: a dull plot
    Output: negative

    Input: what a fine film
    Output:

For the answer (`--target`, else the model's greedy reply to the whole prompt), with
f(prompt) = log p(answer | prompt):

- leave-one-out effect of demo i = f(all) - f(all without demo i): positive when the demo
  made the answer more likely (the explanation's scores);
- label-flip effect of demo i = f(all) - f(demo i with another label): its output becomes
  the next distinct label of the demonstrations (in order of first appearance); with one
  label in the prompt there is nothing to flip to and the effect is None;
- on the local backend, the answer's token attribution (occlusion, or ig) summed over each
  demonstration's tokens (and the instruction's and the query's, in extras).

Log-probabilities come from the backend's `score`: the local backend, or an endpoint that
returns prompt logprobs; an endpoint that returns none stops the method with one line. The
greedy answers without each demonstration and with its label flipped are kept too, so a
reader sees where the answer itself changes.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, FEW_SHOT_PROMPT, method="icl_demos")
    >>> [d["loo_effect"] for d in exp.extras["demos"]]       # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from explainers.explanation import Explanation
from explainers.params import Choice
from explainers.prompting.base import (
    ATTRIBUTIONS,
    PromptingExplainer,
    answer_logprobs,
    ask,
    attribute_spans,
    first_line,
    local_model,
    same_answer,
    units_explanation,
)
from explainers.registry import register
from workbench.errors import WorkbenchError
from workbench.llm import LLM

SEPARATOR = "\n\n"


@dataclass
class Block:
    """One blank-line-separated part of a few-shot prompt."""

    kind: str  # "instruction", "demo" or "query"
    text: str
    output: str | None = None
    output_span: tuple[int, int] | None = None  # the output's characters within `text`

    def with_output(self, label: str) -> str:
        assert self.output_span is not None
        start, end = self.output_span
        return self.text[:start] + label + self.text[end:]


def parse_few_shot(
    text: str, input_prefix: str = "Input:", output_prefix: str = "Output:"
) -> list[Block]:
    """Split a few-shot prompt into instruction, demonstration and query blocks."""
    hint = (
        f"give demonstrations as '{input_prefix} ...' / '{output_prefix} ...' blocks separated "
        f"by blank lines, then the query '{input_prefix} ...' with an empty '{output_prefix}'"
    )
    parts = [p.strip() for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    has_input = re.compile(rf"^[ \t]*{re.escape(input_prefix)}", re.IGNORECASE | re.MULTILINE)
    output_line = re.compile(
        rf"^[ \t]*{re.escape(output_prefix)}[ \t]*", re.IGNORECASE | re.MULTILINE
    )
    blocks: list[Block] = []
    for number, part in enumerate(parts, start=1):
        found = output_line.search(part)
        output = part[found.end() :].strip() if found else ""
        if not has_input.search(part):
            if any(b.kind != "instruction" for b in blocks):
                raise WorkbenchError(f"block {number} has no '{input_prefix}' line; {hint}")
            blocks.append(Block("instruction", part))
        elif output:
            span = (found.end(), found.end() + len(part[found.end() :].rstrip()))
            blocks.append(Block("demo", part, output, span))
        else:
            if number != len(parts):
                raise WorkbenchError(
                    f"block {number} has no '{output_prefix}' value, but only the query "
                    f"(the last block) may leave it empty; {hint}"
                )
            blocks.append(Block("query", part))
    if not any(b.kind == "demo" for b in blocks):
        raise WorkbenchError(f"icl_demos needs a few-shot prompt; found no demonstration: {hint}")
    if blocks[-1].kind != "query":
        raise WorkbenchError(f"the prompt does not end with a query; {hint}")
    return blocks


def assemble(parts: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join blocks with blank lines; also each block's character span in the result."""
    spans, pos = [], 0
    for part in parts:
        spans.append((pos, pos + len(part)))
        pos += len(part) + len(SEPARATOR)
    return SEPARATOR.join(parts), spans


def flip_label(label: str, labels: list[str]) -> str | None:
    if len(labels) < 2:
        return None
    return labels[(labels.index(label) + 1) % len(labels)]


def read_output(reply: str, output_prefix: str) -> str:
    """The model's answer: the first line of its reply, without an echoed `Output:`."""
    line = first_line(reply)
    if line.lower().startswith(output_prefix.lower()):
        line = line[len(output_prefix) :].strip()
    return line


@dataclass
class DemoEdits:
    """The few-shot prompt and its edits: each demonstration left out (`without`, in demo
    order) and each with its output flipped to another label (`flipped`, where one exists)."""

    blocks: list[Block]
    demos: list[int]  # the demonstrations' block indices
    labels: list[str]
    full: str
    spans: list[tuple[int, int]]
    without: list[str]
    flips: dict[int, str | None]
    flipped: dict[int, str]

    @classmethod
    def of(cls, blocks: list[Block]) -> DemoEdits:
        demos = [i for i, b in enumerate(blocks) if b.kind == "demo"]
        labels = list(dict.fromkeys(blocks[i].output for i in demos))
        full, spans = assemble([b.text for b in blocks])
        without = [assemble([b.text for j, b in enumerate(blocks) if j != i])[0] for i in demos]
        flips = {i: flip_label(blocks[i].output, labels) for i in demos}
        flipped = {
            i: assemble([b.with_output(f) if j == i else b.text for j, b in enumerate(blocks)])[0]
            for i, f in flips.items()
            if f is not None
        }
        return cls(blocks, demos, labels, full, spans, without, flips, flipped)

    def records(
        self,
        logps: list[float],
        answers: list[str],
        own: str,
        token_sums: list[float] | None,
    ) -> list[dict[str, Any]]:
        """One record per demonstration, from the log-probabilities of the answer and the
        model's answers on [full, *without, *flipped] (in that order)."""
        n_demos = len(self.demos)
        base = logps[0]
        flip_effect = dict(zip(self.flipped, (base - lp for lp in logps[1 + n_demos :])))
        answers_flipped = dict(zip(self.flipped, answers[1 + n_demos :]))
        records = []
        for n, (i, lp, without) in enumerate(zip(self.demos, logps[1:], answers[1:]), start=1):
            flipped = answers_flipped.get(i)
            records.append(
                {
                    "demo": n,
                    "text": self.blocks[i].text,
                    "output": self.blocks[i].output,
                    "loo_effect": base - lp,
                    "flip_to": self.flips[i],
                    "flip_effect": flip_effect.get(i),
                    "answer_without": without,
                    "changed_without": not same_answer(without, own),
                    "answer_flipped": flipped,
                    "changed_flipped": None if flipped is None else not same_answer(flipped, own),
                    "token_attribution": None if token_sums is None else token_sums[i],
                }
            )
        return records


def _token_attribution(
    llm: LLM, edits: DemoEdits, answer: str, attribution: str
) -> tuple[list[float] | None, str | None]:
    """Each block's summed token attribution of `answer`, or None and why not."""
    if attribution == "none":
        return None, "attribution=none"
    if local_model(llm) is None:
        return None, (
            f"{llm.backend}:{llm.model} gives text only: no token attribution "
            "(it needs the weights; run with the local backend)"
        )
    return attribute_spans(llm, edits.full, answer, edits.spans, attribution), None


@register
class InContextDemos(PromptingExplainer):
    name = "icl_demos"
    summary = "each demonstration's effect on log p(answer): leave-one-out, label flip, tokens"
    takes_target = True
    param_checks = {"attribution": Choice(*ATTRIBUTIONS)}

    def run(
        self,
        llm: LLM,
        text: str,
        target: str | None = None,
        max_tokens: int = 16,
        attribution: str = "occlusion",
        input_prefix: str = "Input:",
        output_prefix: str = "Output:",
    ) -> Explanation:
        blocks = parse_few_shot(text, input_prefix, output_prefix)
        edits = DemoEdits.of(blocks)
        [reply] = ask(llm, [edits.full], int(max_tokens))
        own = read_output(reply, output_prefix)
        answer = target if target is not None else own
        if not answer.strip():
            raise WorkbenchError(
                "the model's answer to the prompt is empty; pass a target to measure an answer"
            )
        prompts = [edits.full, *edits.without, *edits.flipped.values()]
        # Log-probabilities first: a backend without them stops before the other calls.
        logps = answer_logprobs(llm, prompts, [answer] * len(prompts), self.name)
        replies = [reply, *ask(llm, prompts[1:], int(max_tokens))]
        answers = [read_output(r, output_prefix) for r in replies]
        token_sums, note = _token_attribution(llm, edits, answer, attribution)
        records = edits.records(logps, answers, own, token_sums)
        base = logps[0]
        extras: dict[str, Any] = {
            "answer": answer,
            "model_answer": own,
            "reply": reply,
            "answer_logprob": base,
            "labels": edits.labels,
            "demos": records,
            "block_kinds": [b.kind for b in blocks],
            "token_attribution_by_block": token_sums,
        }
        if note:
            extras["attribution_note"] = note
        tokens = [(SEPARATOR if j else "") + b.text for j, b in enumerate(blocks)]
        loo = {i: record["loo_effect"] for i, record in zip(edits.demos, records)}
        scores = [loo.get(j, 0.0) for j in range(len(blocks))]
        params = {
            "max_tokens": int(max_tokens),
            "attribution": attribution,
            "input_prefix": input_prefix,
            "output_prefix": output_prefix,
            "target": target,
        }
        return units_explanation(self, llm, text, tokens, answer, scores, params, extras)
