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
from functools import partial
from typing import Any

from explainers.base import Explanation, Units, choice_param, int_param, register
from explainers.prompting.base import (
    ATTRIBUTIONS,
    PromptingExplainer,
    answer_logprobs,
    ask,
    attribute_spans,
    first_line,
    local_model,
    same_answer,
)
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


@register
class InContextDemos(PromptingExplainer):
    name = "icl_demos"
    summary = "each demonstration's effect on log p(answer): leave-one-out, label flip, tokens"
    takes_target = True
    param_checks = {
        "max_tokens": int_param,
        "attribution": partial(choice_param, choices=ATTRIBUTIONS),
    }

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
        [reply] = ask(llm, [full], int(max_tokens))
        own = read_output(reply, output_prefix)
        answer = target if target is not None else own
        if not answer.strip():
            raise WorkbenchError(
                "the model's answer to the prompt is empty; pass --target to measure an answer"
            )
        prompts = [full, *without, *flipped.values()]
        # Log-probabilities first: a backend without them stops before the other calls.
        logps = answer_logprobs(llm, prompts, [answer] * len(prompts), self.name)
        replies = [reply, *ask(llm, prompts[1:], int(max_tokens))]
        base = logps[0]
        loo = {i: base - lp for i, lp in zip(demos, logps[1 : 1 + len(demos)])}
        flip_effect = {i: base - lp for i, lp in zip(flipped, logps[1 + len(demos) :])}
        answers_without = dict(zip(demos, (read_output(r, output_prefix) for r in replies[1:])))
        answers_flipped = dict(
            zip(flipped, (read_output(r, output_prefix) for r in replies[1 + len(demos) :]))
        )

        token_sums: list[float] | None = None
        note = None
        if attribution == "none":
            note = "attribution=none"
        elif local_model(llm) is None:
            note = (
                f"{llm.backend}:{llm.model} gives text only: no token attribution "
                "(it needs the weights; run with the local backend)"
            )
        else:
            token_sums = attribute_spans(llm, full, answer, spans, attribution)

        records = []
        for n, i in enumerate(demos, start=1):
            records.append(
                {
                    "demo": n,
                    "text": blocks[i].text,
                    "output": blocks[i].output,
                    "loo_effect": loo[i],
                    "flip_to": flips[i],
                    "flip_effect": flip_effect.get(i),
                    "answer_without": answers_without[i],
                    "changed_without": not same_answer(answers_without[i], own),
                    "answer_flipped": answers_flipped.get(i),
                    "changed_flipped": (
                        None
                        if i not in answers_flipped
                        else not same_answer(answers_flipped[i], own)
                    ),
                    "token_attribution": None if token_sums is None else token_sums[i],
                }
            )
        extras: dict[str, Any] = {
            "answer": answer,
            "model_answer": own,
            "reply": reply,
            "answer_logprob": base,
            "labels": labels,
            "demos": records,
            "block_kinds": [b.kind for b in blocks],
            "token_attribution_by_block": token_sums,
        }
        if note:
            extras["attribution_note"] = note
        tokens = [(SEPARATOR if j else "") + b.text for j, b in enumerate(blocks)]
        scores = [loo.get(j, 0.0) for j in range(len(blocks))]
        params = {
            "max_tokens": int(max_tokens),
            "attribution": attribution,
            "input_prefix": input_prefix,
            "output_prefix": output_prefix,
            "target": target,
        }
        return Explanation.from_objective(
            self, Units(llm.model, text, tokens, [answer]), [scores], params=params, extras=extras
        )
