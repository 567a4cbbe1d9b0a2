"""Shared shape of prompt-based methods: the LLM that answers, asking it, reading its replies.

Prompt-based explanations (the prompting paradigm of Zhao et al. 2023, "Explainability for
Large Language Models: A Survey") treat the model as something that answers in text: it is
asked to explain itself, to reason aloud, or is shown demonstrations, and the explanation
is measured by re-asking with edited prompts. Every method therefore runs on an `LLM` from
`workbench.llm`: the local backend (built around the `--model` weights) or any
OpenAI-compatible endpoint (`--llm openai:MODEL`). Parts that need weights (attributing the
answer to prompt tokens) run where the backend is local and say so where it is not; parts
that need log-probabilities ask the backend's `score` and stop with one line where it has
none.

Answers are compared after SQuAD's normalisation (Rajpurkar et al. 2016): lower case, no
punctuation, no articles, single spaces; so "The fridge." and "fridge" are the same answer.
"""

from __future__ import annotations

import inspect
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from explainers.explainer import Explainer, Progress, timed
from explainers.explanation import Explanation, Units
from explainers.params import Int, choice_param
from workbench.errors import WorkbenchError
from workbench.llm import LLM, LLMUnavailableError

if TYPE_CHECKING:
    from workbench.llm.local import LocalLLM
    from workbench.models import LoadedModel

ATTRIBUTIONS = ("occlusion", "ig", "none")  # how the local answer is attributed to tokens
REMOVALS = ("delete", "mask")  # how an edit takes words out of the input


@dataclass
class Word:
    """A whitespace-delimited word of the input, with its character span.

    `core_start:core_end` is the word without surrounding punctuation ("fridge" in
    "fridge."): edits remove or mask the core, so the sentence keeps its punctuation.
    """

    text: str
    start: int
    end: int
    core_start: int
    core_end: int

    @property
    def key(self) -> str:
        return word_key(self.text)


def word_key(word: str) -> str:
    """How words are matched: lower case, no punctuation around them ("Milk," -> "milk")."""
    return word.strip().strip(string.punctuation + "\u201c\u201d\u2018\u2019").lower()


def split_words(text: str) -> list[Word]:
    words = []
    for m in re.finditer(r"\S+", text):
        core = re.search(r"[^\W_](?:.*[^\W_])?", m.group(), flags=re.S)
        lo, hi = (core.start(), core.end()) if core else (0, len(m.group()))
        words.append(Word(m.group(), m.start(), m.end(), m.start() + lo, m.start() + hi))
    return words


def edit_words(text: str, words: list[Word], positions: set[int], removal: str) -> str:
    """The text with the words at `positions` deleted (`removal="delete"`) or masked."""
    choice_param("removal", removal, REMOVALS)
    out = text
    for i in sorted(positions, reverse=True):
        w = words[i]
        out = out[: w.core_start] + ("___" if removal == "mask" else "") + out[w.core_end :]
    # Deleting leaves double spaces; a model reads them as noise that was not in the input.
    return re.sub(r"[ \t]{2,}", " ", out).strip()


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(answer: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation or articles, single spaces."""
    text = answer.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def same_answer(a: str, b: str) -> bool:
    return normalize_answer(a) == normalize_answer(b)


def find_field(reply: str, names: tuple[str, ...], last: bool = False) -> str | None:
    """The value after `Name:` in a reply (markdown bold and a leading "final" allowed).

    Small models put fields mid-line ("... Answer: fridge"), so a field starts anywhere at a
    word boundary and runs to the end of its line. `last` takes the last occurrence (a
    chain of thought may mention "answer:" before its final one).
    """
    pattern = re.compile(
        r"(?:^|(?<=\W))[*_#>\s]*(?:final\s+)?(?:"
        + "|".join(re.escape(n) for n in names)
        + r")[*_\s]*(?:\([^)\n]*\))?[*_\s]*:[*_ \t]*([^\n]*)",
        flags=re.IGNORECASE,
    )
    matches = list(pattern.finditer(reply))
    if not matches:
        return None
    value = matches[-1 if last else 0].group(1)
    return value.strip().strip("*_").strip()


def first_line(reply: str) -> str:
    for line in reply.splitlines():
        if line.strip():
            return line.strip()
    return ""


def fill(template: str, **values: str) -> str:
    # str.format would trip over braces in the user's text; only our own fields are filled.
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


# -- talking to the LLM -------------------------------------------------------------------


def ask(llm: LLM, prompts: list[str], max_tokens: int) -> list[str]:
    """Greedy replies to every prompt; a call that failed after the backend's retries stops
    the method with one line (an unreachable endpoint raises LLMUnavailableError already)."""
    replies = llm.complete(prompts, max_tokens=max_tokens, temperature=0.0)
    for reply in replies:
        if not reply.ok:
            reason = " ".join(str(reply.error).split())
            raise LLMUnavailableError(
                f"the LLM ({llm.backend}:{llm.model}) failed to answer after retries: {reason}"
            )
    return [r.text for r in replies]


def answer_logprobs(llm: LLM, prompts: list[str], answers: list[str], method: str) -> list[float]:
    """log p(answer | prompt) for each pair, as the assistant's reply; a backend without
    log-probabilities stops `method` with one line that says what would work."""
    if not getattr(llm, "supports_scoring", True):
        raise WorkbenchError(_no_logprobs(llm, method, "the backend does not score text"))
    try:
        scored = llm.score(prompts, [[a] for a in answers])
    except LLMUnavailableError as exc:
        raise WorkbenchError(_no_logprobs(llm, method, str(exc))) from None
    return [s.logprobs[0] for s in scored]


def _no_logprobs(llm: LLM, method: str, reason: str) -> str:
    reason = " ".join(reason.split())
    return (
        f"{method} needs log-probabilities, which {llm.backend}:{llm.model} cannot give "
        f"({reason}); use the local backend or an endpoint that returns logprobs "
        "(vLLM, llama.cpp server)"
    )


def resolve_llm(model: LoadedModel | None, llm: LLM | str | None) -> LLM:
    """The LLM to ask: the one given (an `LLM` or a `--llm` spec), else the local model."""
    if isinstance(llm, LLM):
        return llm
    if isinstance(llm, str) and llm != "local":
        from workbench.llm import make_llm

        return make_llm(llm)
    if model is None:
        raise WorkbenchError("prompting methods need a model or an llm to ask")
    if model.kind != "causal":
        raise WorkbenchError(
            f"{model.name} is a classifier; prompting methods ask a causal LM questions"
        )
    from workbench.llm.local import LocalLLM

    return LocalLLM(model)


def local_model(llm: LLM) -> LoadedModel | None:
    """The weights behind a local backend (None for an endpoint: text only)."""
    from workbench.llm.local import LocalLLM

    return llm.lm if isinstance(llm, LocalLLM) else None


# -- attribution of an answer, summed over parts of the prompt ----------------------------


def attribute_spans(
    llm: LocalLLM,
    user_prompt: str,
    answer: str,
    spans: list[tuple[int, int]],
    method: str = "occlusion",
) -> list[float]:
    """Attribute `answer` (the reply to `user_prompt`) to the prompt's tokens on the local
    weights, and sum the scores of the tokens inside each character span of `user_prompt`.

    The model read the prompt inside its chat template, so that is the attributed input;
    a token's score is its effect on log p(answer) as a whole (summed over the answer's
    tokens). `occlusion` is token leave-one-out (Li et al. 2016) over the tokens inside the
    spans only (the chat template and instructions are not reported, so not occluded);
    `ig` is integrated gradients (Sundararajan et al. 2017) over the whole prompt. A token
    that straddles spans counts for the one it overlaps most.
    """
    import torch

    from explainers.attribution.perturbation import evaluate_kept
    from explainers.objective import prepare
    from explainers.registry import get_method

    if method not in ATTRIBUTIONS or method == "none":
        raise WorkbenchError(f"unknown attribution {method!r}; choose occlusion, ig or none")
    formatted = llm.format_prompt(user_prompt)
    offset = formatted.find(user_prompt)
    if offset < 0:
        raise WorkbenchError("the chat template changed the prompt; cannot map attributions back")
    if not answer.strip():
        raise WorkbenchError("the model's answer is empty; there is nothing to attribute")
    obj = prepare(llm.lm, formatted, target=answer)
    owner = []
    for start, end in _token_spans(llm.lm, formatted, obj.input_tokens):
        overlaps = [min(end - offset, hi) - max(start - offset, lo) for lo, hi in spans]
        best = int(np.argmax(overlaps)) if overlaps else -1
        owner.append(best if best >= 0 and overlaps[best] > 0 else -1)
    per_token = np.zeros(len(owner))
    if method == "ig":
        per_token = get_method("ig").explain(llm.lm, formatted, answer).scores.sum(axis=0)
    else:
        special = obj.special_mask.tolist()
        positions = [p for p, o in enumerate(owner) if o >= 0 and not special[p]]
        if positions:
            keep = torch.ones(len(positions), len(owner), dtype=torch.bool)
            keep[torch.arange(len(positions)), torch.tensor(positions)] = False
            values, _ = evaluate_kept(obj, keep, "delete")
            full = float(obj.row_values().sum())
            per_token[positions] = full - values.sum(dim=1).double().numpy()
    sums = np.zeros(len(spans))
    for o, score in zip(owner, per_token):
        if o >= 0:
            sums[o] += score
    return sums.tolist()


def _token_spans(lm: LoadedModel, text: str, tokens: list[str]) -> list[tuple[int, int]]:
    tok = lm.tokenizer
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
        if len(enc["input_ids"]) == len(tokens):
            return [tuple(o) for o in enc["offset_mapping"]]
    # Slow tokenizers: decoded tokens laid end to end (exact for byte-level BPE).
    spans, pos = [], 0
    for token in tokens:
        spans.append((pos, pos + len(token)))
        pos += len(token)
    return spans


# -- the explainer base class -------------------------------------------------------------


class PromptingExplainer(Explainer):
    """A prompt-based method: subclasses implement `run(llm, text, **params)`.

    `explain(model, text, llm=...)` asks `llm` (an `LLM` or a spec like "openai:gpt-4o-mini")
    or, without one, the local `model`. It follows the base template: the request and the
    parameters are checked first, with no model (`check_request`, `check_params`: what the
    CLI runs before anything loads), so `--generate`, `--contrast` and a `--target` the
    method cannot use are refused with one line. `param_checks` says how each parameter's
    value is checked. The LLM's run is one step of `progress`: (0, 1) when it starts, (1, 1)
    when it is done.
    """

    category = "prompting"
    takes_target = False  # icl_demos measures a given answer; the others find the model's own
    takes_generate = False
    model_kinds = ("causal",)
    param_checks = {"max_tokens": Int(min=1)}

    @timed
    def explain(
        self,
        model: LoadedModel | None,
        text: str,
        target: str | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
        candidates: list[str] | None = None,
        objective: str | None = None,
        aggregate: str = "token",
        llm: LLM | str | None = None,
        progress: Progress | None = None,
        **params: Any,
    ) -> Explanation:
        self.check_request(
            text,
            target,
            generate=generate,
            contrast=contrast,
            candidates=candidates,
            objective=objective,
            aggregate=aggregate,
        )
        params = self.check_params(params)
        backend = resolve_llm(model, llm)
        if self.takes_target:
            params["target"] = target
        if progress is not None:
            progress(0, 1)
        exp = self.run(backend, text, **params)
        if progress is not None:
            progress(1, 1)
        exp.params = {**exp.params, "llm": backend.describe()}
        return exp

    def run(self, llm: LLM, text: str, **params: Any) -> Explanation:
        raise NotImplementedError

    def parameter_names(self) -> set[str]:
        skip = {"self", "llm", "text", "target"}
        return {n for n in inspect.signature(self.run).parameters if n not in skip}


def word_tokens(text: str, words: list[Word]) -> list[str]:
    """The input's words as an explanation's tokens (each after the text that precedes it)."""
    return [text[words[i - 1].end : w.start] + w.text if i else w.text for i, w in enumerate(words)]


def units_explanation(
    method: PromptingExplainer,
    llm: LLM,
    text: str,
    tokens: list[str],
    answer: str,
    scores: list[float],
    params: dict[str, Any],
    extras: dict[str, Any],
) -> Explanation:
    """An Explanation over `tokens`, the units the method cut `text` into (its words:
    `word_tokens`); one row, the model's answer."""
    units = Units(llm.model, text, tokens, [answer], model_info=llm.model_info)
    return Explanation.from_objective(method, units, [scores], params=params, extras=extras)
