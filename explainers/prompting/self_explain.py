"""Self-explanation: the model answers and says which words of the input mattered, and why.

The prompting-paradigm explanation of Zhao et al. 2023 ("Explainability for Large Language
Models: A Survey"): ask for the answer together with the important input words, as in
Huang et al. 2023 ("Can Large Language Models Explain Themselves? A Study of LLM-Generated
Self-Explanations") and Madsen et al. 2024 ("Are self-explanations from Large Language
Models faithful?"). The explanation's scores are 1 for the input words the model named
and 0 for the others; whether those words are the ones the answer depends on is what
`counterfactual_test` measures.

The reply is read forgivingly, since small models rarely keep to a format: the answer is the
`Answer:` field (else the reply's first line), the important words the `Important words:`
field (else words of the input the reply puts in quotes), the reason the `Why:` field.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the fridge. Where is the milk?", method="self_explain")
    >>> exp.extras["important_words"]                        # doctest: +SKIP
    ['milk', 'fridge']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from explainers.base import Explanation, register
from explainers.prompting.base import (
    PromptingExplainer,
    Word,
    ask,
    fill,
    find_field,
    first_line,
    split_words,
    word_explanation,
    word_key,
)
from workbench.errors import WorkbenchError
from workbench.llm import LLM

SELF_EXPLAIN_TEMPLATE = """{input}

Answer the question above. Then name the words of the text that mattered most
for your answer, and say why.
Reply in exactly this format:
Answer: <your answer, in a few words>
Important words: <at most {max_words} words copied from the text, separated by commas>
Why: <one sentence>"""

ANSWER_FIELDS = ("answer",)
WORDS_FIELDS = ("important words", "important word", "key words", "keywords", "words")
WHY_FIELDS = ("why", "reason", "explanation", "because")
QUOTED = r"[\"'\u201c\u2018]([^\"'\u201d\u2019\n]{1,40})[\"'\u201d\u2019]"


@dataclass
class SelfExplanation:
    """A parsed self-explanation of one input."""

    prompt: str
    reply: str
    answer: str
    named: list[str]  # the words (or phrases) as the model wrote them
    why: str
    words: list[Word]  # the input's words
    important: list[int] = field(default_factory=list)  # input word positions named
    unmatched: list[str] = field(default_factory=list)  # named words not in the input

    @property
    def marks(self) -> list[float]:
        chosen = set(self.important)
        return [1.0 if i in chosen else 0.0 for i in range(len(self.words))]

    def to_extras(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "important_words": [self.words[i].text for i in self.important],
            "named_words": self.named,
            "unmatched_words": self.unmatched,
            "why": self.why,
            "prompt": self.prompt,
            "reply": self.reply,
        }


def parse_self_explanation(text: str, prompt: str, reply: str) -> SelfExplanation:
    """Read the answer, the named words and the reason from a reply about `text`."""
    words = split_words(text)
    answer = find_field(reply, ANSWER_FIELDS)
    if not answer:
        answer = first_line(reply)
    listed = find_field(reply, WORDS_FIELDS)
    if listed is not None:
        named = [n for n in re.split(r",|;|\band\b|\s/\s", listed) if word_key(n)]
    else:
        # No field: words of the input that the reply quotes ('"milk" tells me ...').
        quoted = re.findall(QUOTED, reply)
        named = [q for q in quoted if word_key(q)]
    named = [n.strip() for n in named]
    why = find_field(reply, WHY_FIELDS) or ""
    important: set[int] = set()
    unmatched = []
    for phrase in named:
        found = phrase_positions(words, [word_key(p) for p in phrase.split() if word_key(p)])
        important.update(found)
        if not found:
            unmatched.append(phrase)
    return SelfExplanation(prompt, reply, answer, named, why, words, sorted(important), unmatched)


def phrase_positions(words: list[Word], keys: list[str]) -> list[int]:
    """Input positions of a named phrase: where it occurs as a whole ("the fridge" marks
    that "the", not every "the"), else wherever each of its words occurs."""
    text_keys = [w.key for w in words]
    n = len(keys)
    whole = [
        i + j for i in range(len(words) - n + 1) if text_keys[i : i + n] == keys for j in range(n)
    ]
    if whole or n < 2:
        return whole
    return [i for i, k in enumerate(text_keys) if k in set(keys)]


def self_explanation(
    llm: LLM, text: str, max_words: int = 3, max_tokens: int = 64
) -> SelfExplanation:
    """Ask `llm` for its answer about `text` and the words that mattered (one call)."""
    if max_words < 1:
        raise WorkbenchError(f"max_words must be at least 1, not {max_words}")
    prompt = fill(SELF_EXPLAIN_TEMPLATE, input=text.strip(), max_words=str(max_words))
    [reply] = ask(llm, [prompt], max_tokens)
    return parse_self_explanation(text, prompt, reply)


@register
class SelfExplain(PromptingExplainer):
    name = "self_explain"
    summary = "the model's answer and the input words it says mattered (1 = named)"

    def run(self, llm: LLM, text: str, max_words: int = 3, max_tokens: int = 64) -> Explanation:
        found = self_explanation(llm, text, int(max_words), int(max_tokens))
        params = {"max_words": int(max_words), "max_tokens": int(max_tokens)}
        return word_explanation(
            self, llm, text, found.words, found.answer, found.marks, params, found.to_extras()
        )
