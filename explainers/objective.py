"""What a token-level method explains: one scalar per target row, as a function of the prompt.

For a causal LM the rows are the target tokens: row i is log p(t_i | prompt, t_<i), the
earlier target tokens fed as they are (teacher forcing), so that every row comes out of one
forward pass. With a contrast, row i is log p(t_i | ...) - log p(c_i | ...), both read at the
same position. For a sequence classifier there is one row: log p(label | text).

Only the prompt's embeddings are varied by attribution methods; special tokens (BOS, CLS,
SEP) keep their real embedding in every baseline, as in captum's BERT tutorials, so they
receive no attribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch

from explainers.tokens import PIECES_KEY, token_labels
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

BASELINES = ("zero", "pad", "eos")


@dataclass
class Objective:
    lm: LoadedModel
    text: str
    prompt_ids: torch.Tensor  # [P]
    target_ids: torch.Tensor  # [T] (empty for classifiers)
    label: int | None = None  # classifier target
    contrast_ids: torch.Tensor | None = None  # [T]
    # The target and contrast ids on each device they were needed on (see `_row_ids`).
    _ids_by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    aggregation: ClassVar[str] = "token"  # an objective's units are the model's tokens

    # -- tokens ------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.lm.name

    @property
    def model_info(self) -> dict[str, Any]:
        """Which weights are explained: base, adapter and its hash, dtype (ModelIdentity)."""
        return self.lm.identity.to_dict()

    def record_extras(self) -> dict[str, Any]:
        """What a stored explanation keeps to rebuild this objective (metrics re-run it)."""
        extras: dict[str, Any] = {}
        if self.lm.kind != "classifier":
            # Decoded tokens may not re-tokenize to these ids (word-level vocabularies).
            extras["target_ids"] = self.target_ids.tolist()
        if self.contrast_ids is not None:
            extras["contrast_tokens"] = self.contrast_tokens
            extras["contrast_ids"] = self.contrast_ids.tolist()
        if self._prompt_labels[1]:
            extras[PIECES_KEY] = self._prompt_labels[1]  # renderings merge these tokens
        return extras

    @property
    def n_rows(self) -> int:
        return 1 if self.lm.kind == "classifier" else int(self.target_ids.numel())

    @property
    def extra_tokens(self) -> int:
        """Tokens a forward runs after the prompt (the teacher-forced target; a choice
        objective's packed candidates): what batch sizes count besides the prompt."""
        return max(int(self.target_ids.numel()) - 1, 0)

    @cached_property
    def _prompt_labels(self) -> tuple[list[str], list[list[int]]]:
        return token_labels(self.lm.tokenizer, self.prompt_ids.tolist())

    @property
    def input_tokens(self) -> list[str]:
        """One readable label per prompt token (see `explainers.tokens`)."""
        return self._prompt_labels[0]

    @cached_property
    def target_tokens(self) -> list[str]:
        if self.lm.kind == "classifier":
            return [self.lm.labels[self.label]]
        return token_labels(self.lm.tokenizer, self.target_ids.tolist())[0]

    @cached_property
    def contrast_tokens(self) -> list[str] | None:
        if self.contrast_ids is None:
            return None
        return token_labels(self.lm.tokenizer, self.contrast_ids.tolist())[0]

    @cached_property
    def special_mask(self) -> torch.Tensor:
        special = set(self.lm.tokenizer.all_special_ids)
        return torch.tensor([i in special for i in self.prompt_ids.tolist()], dtype=torch.bool)

    @cached_property
    def word_ids(self) -> list[int]:
        return word_ids(self.lm.tokenizer, self.text, self.prompt_ids, self.input_tokens)

    # -- embeddings --------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> float32 embeddings (attribution arithmetic stays in float32)."""
        with torch.no_grad():
            return self.lm.embeddings(ids.to(self.lm.device)).float()

    @cached_property
    def input_embeddings(self) -> torch.Tensor:
        return self.embed(self.prompt_ids)  # [P, D]

    def baseline_embeddings(self, baseline: str) -> torch.Tensor:
        """The reference input: zero vectors, or the pad or EOS token at every position."""
        x = self.input_embeddings
        if baseline == "zero":
            ref = torch.zeros_like(x)
        elif baseline in ("pad", "eos"):
            tok = self.lm.tokenizer
            token_id = tok.pad_token_id if baseline == "pad" else tok.eos_token_id
            if token_id is None:
                raise WorkbenchError(f"this tokenizer has no {baseline} token; use baseline zero")
            ref = self.embed(torch.tensor([token_id])).expand_as(x).clone()
        else:
            raise WorkbenchError(f"baseline must be {' or '.join(BASELINES)}, not {baseline!r}")
        mask = self.special_mask.to(x.device)
        ref[mask] = x[mask]
        return ref

    def baseline_token_id(self, baseline: str) -> int:
        """The token that stands for a removed token (perturbation methods)."""
        tok = self.lm.tokenizer
        if baseline == "eos" and tok.eos_token_id is not None:
            return tok.eos_token_id
        if tok.pad_token_id is not None:
            return tok.pad_token_id
        if tok.unk_token_id is not None:
            return tok.unk_token_id
        return 0

    # -- forward -----------------------------------------------------------------------

    @cached_property
    def _target_prefix(self) -> torch.Tensor:
        # Teacher-forced target tokens after the prompt: the last one is never an input.
        return self.embed(self.target_ids[:-1])  # [T-1, D]

    def forward_embeddings(
        self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, P, D] prompt embeddings (float32) -> [B, rows] objective values (differentiable).

        `attention_mask` [B, P] masks prompt positions out (perturbation methods).
        """
        return self.values_from_log_probs(self.row_log_probs(prompt_embeds, attention_mask))

    def row_log_probs(
        self, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, P, D] prompt embeddings -> [B, rows, V] log-probabilities at each target row.

        V is the vocabulary (causal LM) or the label set (classifier); decision-flip metrics
        read the arg-max from here, the objective reads the target entries.
        """
        model, dtype = self.lm.model, self.lm.dtype
        batch = prompt_embeds.shape[0]
        embeds = prompt_embeds.to(dtype)
        if self.lm.kind == "classifier":
            out = model(inputs_embeds=embeds, attention_mask=attention_mask)
            return torch.log_softmax(out.logits.float(), dim=-1).unsqueeze(1)
        prefix = self._target_prefix.to(dtype).unsqueeze(0).expand(batch, -1, -1)
        embeds = torch.cat([embeds, prefix], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(batch, prefix.shape[1])
            attention_mask = torch.cat([attention_mask, ones], dim=1)
        n_targets = self.target_ids.numel()
        kwargs = {"logits_to_keep": n_targets} if self.lm.keeps_logits else {}
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs).logits
        return torch.log_softmax(logits[:, -n_targets:].float(), dim=-1)

    def values_from_log_probs(self, logp: torch.Tensor) -> torch.Tensor:
        """[B, rows, V] log-probabilities -> [B, rows] objective values."""
        batch = logp.shape[0]
        if self.lm.kind == "classifier":
            return logp[:, 0, self.label : self.label + 1]
        targets, contrast = self._row_ids(logp.device)
        values = logp.gather(-1, targets.expand(batch, -1, 1)).squeeze(-1)
        if contrast is not None:
            values = values - logp.gather(-1, contrast.expand(batch, -1, 1)).squeeze(-1)
        return values

    def _row_ids(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The target (and contrast) ids as [1, rows, 1] on `device`, sent once per device:
        a copy from the CPU in every call would make the host wait for the GPU's queued
        work (the perturbation engine keeps the GPU busy across batches)."""
        if device not in self._ids_by_device:
            contrast = self.contrast_ids
            self._ids_by_device[device] = (
                self.target_ids.view(1, -1, 1).to(device),
                None if contrast is None else contrast.view(1, -1, 1).to(device),
            )
        return self._ids_by_device[device]

    def forward_ids(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, P] prompt token ids -> [B, rows] objective values, without gradients."""
        with torch.no_grad():
            return self.forward_embeddings(self.embed(ids), attention_mask)

    def predicted_label(self) -> int:
        with torch.no_grad():
            embeds = self.input_embeddings.unsqueeze(0).to(self.lm.dtype)
            return int(self.lm.model(inputs_embeds=embeds).logits[0].argmax())

    def row_values(self) -> torch.Tensor:
        """The objective on the real input: [rows]."""
        return self.forward_ids(self.prompt_ids.unsqueeze(0))[0]


def prepare(
    lm: LoadedModel,
    text: str,
    target: str | int | None = None,
    *,
    generate: int | None = None,
    contrast: str | None = None,
) -> Objective:
    """Tokenize the input and resolve what to explain.

    Causal LMs: `target` is a continuation text (every token attributed); `generate=N`
    takes the model's greedy continuation instead; with neither, its top next token.
    Classifiers: `target` is a label name or index; without one, the predicted label.
    """
    prompt_ids = _prompt_ids(lm, text)
    empty = torch.zeros(0, dtype=torch.long)
    if lm.kind == "classifier":
        if generate is not None or contrast is not None:
            raise WorkbenchError("generate and contrast apply to causal LMs, not classifiers")
        obj = Objective(lm, text, prompt_ids, empty, label=0)
        obj.label = _resolve_label(lm, target, obj)
        return obj
    if target is not None and generate is not None:
        raise WorkbenchError("give either target or generate, not both")
    if target is not None:
        target_ids = _tokenize_continuation(lm, str(target), "target")
    else:
        target_ids = greedy_continuation(lm, prompt_ids, generate or 1)
    contrast_ids = None
    if contrast is not None:
        contrast_ids = _tokenize_continuation(lm, contrast, "contrast")
        if contrast_ids.numel() != target_ids.numel():
            raise WorkbenchError(
                f"contrast must tokenize to as many tokens as the target "
                f"({contrast_ids.numel()} vs {target_ids.numel()})"
            )
    return Objective(lm, text, prompt_ids, target_ids, contrast_ids=contrast_ids)


def prepare_ids(
    lm: LoadedModel,
    text: str,
    target_ids: list[int],
    contrast_ids: list[int] | None = None,
) -> Objective:
    """A causal-LM objective for target token ids known already (a stored explanation's).

    Decoded tokens do not always re-tokenize to the same ids (word-level vocabularies lose
    the spaces between tokens), so explanations keep their target ids for re-evaluation.
    """
    if lm.kind == "classifier":
        raise WorkbenchError("target token ids apply to causal LMs, not classifiers")
    if not target_ids:
        raise WorkbenchError("there is no target token to explain")
    if contrast_ids is not None and len(contrast_ids) != len(target_ids):
        raise WorkbenchError("the contrast must have as many tokens as the target")
    contrast = None if contrast_ids is None else torch.tensor(contrast_ids, dtype=torch.long)
    target = torch.tensor(target_ids, dtype=torch.long)
    return Objective(lm, text, _prompt_ids(lm, text), target, contrast_ids=contrast)


def _prompt_ids(lm: LoadedModel, text: str) -> torch.Tensor:
    if not text or not text.strip():
        raise WorkbenchError("text is empty")
    ids = lm.tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise WorkbenchError("the input text tokenizes to nothing")
    return torch.tensor(ids, dtype=torch.long)


def greedy_continuation(lm: LoadedModel, prompt_ids: torch.Tensor, n: int) -> torch.Tensor:
    if n < 1:
        raise WorkbenchError("generate must be >= 1")
    tok = lm.tokenizer
    ids = prompt_ids.unsqueeze(0).to(lm.device)
    with torch.no_grad():
        out = lm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    new = out[0, ids.shape[1] :].cpu()
    if tok.eos_token_id is not None and new.numel() > 1 and new[-1] == tok.eos_token_id:
        new = new[:-1]
    if new.numel() == 0:
        raise WorkbenchError("the model generated nothing to explain")
    return new


def _tokenize_continuation(lm: LoadedModel, text: str, what: str) -> torch.Tensor:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WorkbenchError(f"the {what} {text!r} tokenizes to nothing")
    return torch.tensor(ids, dtype=torch.long)


def _resolve_label(lm: LoadedModel, target: str | int | None, obj: Objective) -> int:
    labels = lm.labels
    if target is None:
        return obj.predicted_label()
    text = str(target)
    if text in labels:
        return labels.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(labels):
        return int(text)
    raise WorkbenchError(f"the classifier has no label {text!r}; its labels: {', '.join(labels)}")


def word_ids(tokenizer, text: str, ids: torch.Tensor, tokens: list[str]) -> list[int]:
    """Map each token to a whitespace-delimited word; special tokens are words of their own."""
    special = set(tokenizer.all_special_ids)
    offsets = None
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        if enc["input_ids"] == ids.tolist():
            offsets = enc["offset_mapping"]
    result: list[int] = []
    word = -1
    prev_special = True
    for i, (tid, tok) in enumerate(zip(ids.tolist(), tokens)):
        if tid in special:
            word += 1
            prev_special = True
        else:
            starts_word = prev_special or tok[:1].isspace()
            if offsets is not None and not starts_word and tok:  # "": a character's piece
                # After a whitespace-only token the word has started already (" " + "😀").
                start = offsets[i][0]
                starts_word = (
                    start > 0 and text[start - 1].isspace() and not tokens[i - 1].isspace()
                )
            if starts_word:
                word += 1
            prev_special = False
        result.append(word)
    return result
