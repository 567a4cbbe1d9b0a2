"""Counterfactual test of a self-explanation: does the answer depend on the words the model
says mattered, more than on the words it passed over?

Following Atanasova et al. 2023 ("Faithfulness Tests for Natural Language Explanations")
and Madsen et al. 2024 ("Are self-explanations from Large Language Models faithful?"): a
faithful self-explanation names words whose removal changes the answer, and words it does
not name can go without changing it.

1. `self_explain` gives the answer and the important words (distinct words, every occurrence
   counts: removing "milk" removes each "milk").
2. The question is asked again without the explanation request (`ANSWER_TEMPLATE`); that
   answer is the reference the edits are compared with.
3. Edits, in two matched conditions of k = number of important words: each important word
   alone (k edits) and all of them at once (1 edit); k randomly drawn unimportant words,
   each alone (k edits) and all at once (1 edit). `removal="delete"` deletes the words,
   `"mask"` writes ___ in their place.
4. Each edited input is re-asked; an edit changes the answer when the normalised answers
   differ. The change rate of each condition is changed edits / edits; a faithful
   explanation has a high important rate and a low unimportant one.

Where the backend is local, the reference answer is also attributed to the input words
(occlusion by default, or ig; Li et al. 2016, Sundararajan et al. 2017), and the agreement
between that attribution and the self-explanation is reported: Kendall's tau-b between the
attribution and the 0/1 marks, and top-k overlap (the share of the k named words among the k
words with the highest attribution). An endpoint gives text only: the agreement is left out
and `extras["agreement_note"]` says why.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the fridge. Where is the milk?",
    ...               method="counterfactual_test")
    >>> exp.extras["change_rate"]                            # doctest: +SKIP
    {'important': 1.0, 'unimportant': 0.25}
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from explainers.explanation import Explanation
from explainers.metrics import kendall_tau
from explainers.metrics.faithfulness import top_k_mask
from explainers.params import Choice, Int
from explainers.prompting.base import (
    ATTRIBUTIONS,
    REMOVALS,
    PromptingExplainer,
    Word,
    ask,
    attribute_spans,
    edit_words,
    fill,
    find_field,
    first_line,
    local_model,
    same_answer,
    units_explanation,
    word_tokens,
)
from explainers.prompting.self_explain import ANSWER_FIELDS, SelfExplanation, self_explanation
from explainers.registry import register
from workbench.errors import WorkbenchError
from workbench.llm import LLM

ANSWER_TEMPLATE = """{input}

Answer the question above in a few words.
Reply in exactly this format:
Answer: <your answer>"""


def read_answer(reply: str) -> str:
    return find_field(reply, ANSWER_FIELDS) or first_line(reply)


def ask_answers(llm: LLM, texts: list[str], max_tokens: int) -> tuple[list[str], list[str]]:
    """(answers, raw replies) of the plain question about each text."""
    prompts = [fill(ANSWER_TEMPLATE, input=t.strip()) for t in texts]
    replies = ask(llm, prompts, max_tokens)
    return [read_answer(r) for r in replies], replies


def plan_edits(found: SelfExplanation, seed: int) -> list[tuple[str, str, list[str]]]:
    """(condition, kind, word keys removed) for every edit, matched in size across conditions."""
    important = list(dict.fromkeys(found.words[i].key for i in found.important))
    others = list(dict.fromkeys(w.key for w in found.words if w.key and w.key not in important))
    k = min(len(important), len(others))
    drawn = random.Random(seed).sample(others, k)
    edits = []
    for condition, keys in (("important", important[:k]), ("unimportant", drawn)):
        edits.extend((condition, "single", [key]) for key in keys)
        if len(keys) > 1:
            edits.append((condition, "all", list(keys)))
    return edits


def positions_of(words: list[Word], keys: list[str]) -> set[int]:
    wanted = set(keys)
    return {i for i, w in enumerate(words) if w.key in wanted}


@register
class CounterfactualTest(PromptingExplainer):
    name = "counterfactual_test"
    summary = "answer change rate when the self-named important vs unimportant words are removed"
    param_checks = {
        "max_words": Int(min=1),
        "removal": Choice(*REMOVALS),
        "seed": Int(min=None),
        "attribution": Choice(*ATTRIBUTIONS),
    }

    def run(
        self,
        llm: LLM,
        text: str,
        max_words: int = 3,
        max_tokens: int = 64,
        removal: str = "delete",
        seed: int = 0,
        attribution: str = "occlusion",
    ) -> Explanation:
        found = self_explanation(llm, text, int(max_words), int(max_tokens))
        if not found.important:
            raise WorkbenchError(
                "the self-explanation names no word of the input, so there is nothing to test "
                f"(reply: {' '.join(found.reply.split())[:160]!r})"
            )
        edits = plan_edits(found, int(seed))
        if not any(condition == "unimportant" for condition, _, _ in edits):
            raise WorkbenchError(
                "every word of the input was named important; nothing is left to compare with"
            )
        edited = [
            edit_words(text, found.words, positions_of(found.words, keys), removal)
            for _, _, keys in edits
        ]
        answers, replies = ask_answers(llm, [text, *edited], int(max_tokens))
        reference = answers[0]
        records = []
        for (condition, kind, keys), new_text, answer in zip(edits, edited, answers[1:]):
            records.append(
                {
                    "condition": condition,
                    "kind": kind,
                    "removed": keys,
                    "text": new_text,
                    "answer": answer,
                    "changed": not same_answer(answer, reference),
                }
            )
        rates = {
            c: float(np.mean([r["changed"] for r in records if r["condition"] == c]))
            for c in ("important", "unimportant")
        }
        extras: dict[str, Any] = {
            **found.to_extras(),
            "self_explain_answer": found.answer,
            "answer": reference,
            "reference_reply": replies[0],
            "edits": records,
            "change_rate": rates,
            "faithfulness_gap": rates["important"] - rates["unimportant"],
            "n_edits": {c: sum(r["condition"] == c for r in records) for c in rates},
        }
        extras.update(self._agreement(llm, text, found, replies[0], attribution))
        params = {
            "max_words": int(max_words),
            "max_tokens": int(max_tokens),
            "removal": removal,
            "seed": int(seed),
            "attribution": attribution,
        }
        tokens = word_tokens(text, found.words)
        exp = units_explanation(self, llm, text, tokens, reference, found.marks, params, extras)
        if found.warning:
            exp.warn(found.warning, found.status)
        return exp

    def _agreement(
        self, llm: LLM, text: str, found: SelfExplanation, reply: str, attribution: str
    ) -> dict[str, Any]:
        if attribution == "none":
            return {"agreement": None, "agreement_note": "attribution=none"}
        if local_model(llm) is None:
            return {
                "agreement": None,
                "agreement_note": (
                    f"{llm.backend}:{llm.model} gives text only: no gradients or forward passes "
                    "on its weights, so only the counterfactual part was measured"
                ),
            }
        # The words' spans inside the plain question prompt (the reference answer's prompt).
        prompt = fill(ANSWER_TEMPLATE, input=text.strip())
        shift = prompt.find(text.strip()) - (len(text) - len(text.lstrip()))
        spans = [(w.start + shift, w.end + shift) for w in found.words]
        scores = attribute_spans(llm, prompt, reply, spans, attribution)
        marks = found.marks
        k = len(found.important)
        overlap = float(np.sum(top_k_mask(scores, k) & (np.asarray(marks) > 0))) / k
        tau = kendall_tau(marks, scores)
        return {
            "agreement": {
                "method": attribution,
                "word_scores": [round(s, 6) for s in scores],
                "kendall_tau": None if np.isnan(tau) else tau,
                "top_k_overlap": overlap,
                "k": k,
            }
        }
