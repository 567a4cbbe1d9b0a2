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
field (else words of the input the reply puts in quotes, else the input's words the reply
repeats, stop words aside), the reason the `Why:` field. The explanation's `status` says how
it was read: "ok", "format_not_followed" (words taken from a reply without the fields) or
"no_words_named" (every score is 0); the last two come with a warning.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the fridge. Where is the milk?", method="self_explain")
    >>> exp.extras["important_words"]                        # doctest: +SKIP
    ['milk', 'fridge']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from explainers.explanation import Explanation
from explainers.params import Int
from explainers.prompting.base import (
    PromptingExplainer,
    Word,
    ask,
    fill,
    find_field,
    first_line,
    split_words,
    units_explanation,
    word_key,
    word_tokens,
)
from explainers.registry import register
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
# The template's field names, which a reply echoes without naming the input's words.
FIELD_LABEL = re.compile(
    r"(?i)\b(?:final\s+)?(?:"
    + "|".join(re.escape(n) for n in (*ANSWER_FIELDS, *WORDS_FIELDS, *WHY_FIELDS))
    + r")\s*:"
)

OK, FORMAT_NOT_FOLLOWED, NO_WORDS_NAMED = "ok", "format_not_followed", "no_words_named"


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
    words_source: str = "field"  # where `named` was read: "field", "quoted" or "repeated"

    @property
    def marks(self) -> list[float]:
        chosen = set(self.important)
        return [1.0 if i in chosen else 0.0 for i in range(len(self.words))]

    @property
    def status(self) -> str:
        if not self.important:
            return NO_WORDS_NAMED
        return OK if self.words_source == "field" else FORMAT_NOT_FOLLOWED

    @property
    def warning(self) -> str | None:
        """What a reader must know about how the reply was read (None when it kept to the
        format and named words of the input)."""
        reply = " ".join(self.reply.split())[:160]
        if self.status == NO_WORDS_NAMED:
            return f"the reply names no word of the input, so every score is 0 (reply: {reply!r})"
        if self.status == FORMAT_NOT_FOLLOWED:
            how = "quotes" if self.words_source == "quoted" else "repeats"
            chosen = ", ".join(dict.fromkeys(self.words[i].key for i in self.important))
            return (
                "the reply did not follow the requested format; the important words are the "
                f"input words it {how}: {chosen} (reply: {reply!r})"
            )
        return None

    def to_extras(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "important_words": [self.words[i].text for i in self.important],
            "named_words": self.named,
            "unmatched_words": self.unmatched,
            "words_source": self.words_source,
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
        source = "field"
        named = [n for n in re.split(r",|;|\band\b|\s/\s", listed) if word_key(n)]
    else:
        # No field: words of the input that the reply quotes ('"milk" tells me ...'), else
        # the input's words it repeats ("The fridge is used to keep milk cold.").
        source = "quoted"
        named = [q for q in re.findall(QUOTED, reply) if word_key(q)]
        if not any(_positions(words, phrase) for phrase in named):
            source, named = "repeated", repeated_words(words, reply)
    named = [n.strip() for n in named]
    why = find_field(reply, WHY_FIELDS) or ""
    important: set[int] = set()
    unmatched = []
    for phrase in named:
        found = _positions(words, phrase)
        important.update(found)
        if not found:
            unmatched.append(phrase)
    return SelfExplanation(
        prompt, reply, answer, named, why, words, sorted(important), unmatched, source
    )


def _positions(words: list[Word], phrase: str) -> list[int]:
    return phrase_positions(words, [word_key(p) for p in phrase.split() if word_key(p)])


def repeated_words(words: list[Word], reply: str) -> list[str]:
    """The input's distinct words that `reply` repeats, in input order, leaving out stop
    words (scikit-learn's English list) and the field names the reply echoes."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    said = {word_key(w) for w in FIELD_LABEL.sub(" ", reply).split()}
    keys = [w.key for w in words]
    return [k for k in dict.fromkeys(keys) if k and k in said and k not in ENGLISH_STOP_WORDS]


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
    param_checks = {"max_words": Int(min=1)}

    def run(self, llm: LLM, text: str, max_words: int = 3, max_tokens: int = 64) -> Explanation:
        found = self_explanation(llm, text, int(max_words), int(max_tokens))
        params = {"max_words": int(max_words), "max_tokens": int(max_tokens)}
        tokens = word_tokens(text, found.words)
        exp = units_explanation(
            self, llm, text, tokens, found.answer, found.marks, params, found.to_extras()
        )
        if found.warning:
            exp.warn(found.warning, found.status)
        return exp
