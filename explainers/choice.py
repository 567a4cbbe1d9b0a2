"""Why this candidate rather than the others: objectives over a decision among candidates.

An agent that ranks commands picks the one with the best adjusted score
a_k = s_k / d_k - o_k, where s_k is the summed log-probability of candidate k after the
prompt, d_k its divisor (1, or its length for the "mean" scoring mode) and o_k a constant
offset (the repeat penalty of a command that changed nothing, plus the neutral-prompt
log-probability for "calibrated" scores). Attributing log p(chosen text) mixes "why is this
string likely" with "why this command rather than the others"; these objectives explain the
decision itself:

- ``choice``: log p(chosen | candidates), the log-softmax of the adjusted scores at the
  chosen candidate (the default for an agent's step);
- ``margin``: the chosen candidate's adjusted score minus the runner-up's;
- ``logprob``: the chosen text's token log-probabilities (`explainers.objective`).

Candidates share the prompt, so each forward runs the prompt once with every candidate
packed after it (`workbench.llm.candidates`): a choice among 20 commands costs one prompt
forward and backward plus the candidates' few tokens, not 20 of them. The objective has one
row; its "vocabulary" is the candidate set, so the decision-flip metrics read the predicted
candidate from `row_log_probs` like a predicted token.

    >>> exp = explain(lm, prompt, "ig", candidates=["open fridge", "take knife"])  # doctest: +SKIP
    >>> exp.target_tokens                                                 # doctest: +SKIP
    ["choice of 'take knife'"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from explainers.objective import Objective, _prompt_ids
from workbench.errors import WorkbenchError
from workbench.llm.candidates import (
    PackedCandidates,
    additive_mask,
    encode_candidates,
    pack_candidates,
)
from workbench.models import LoadedModel
from workbench.prefix_cache import PrefixCache

OBJECTIVES = ("choice", "margin", "logprob")
CHOICE_OBJECTIVES = ("choice", "margin")


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise WorkbenchError(f"objective must be {', '.join(OBJECTIVES)}, not {objective!r}")


@dataclass
class ChoiceObjective(Objective):
    """The choice (or margin) of `candidates[chosen]` after the prompt, one row.

    `divisors` and `offsets` ([K]) turn summed log-probabilities into the scores the
    decision ranked: a_k = s_k / divisors[k] - offsets[k].
    """

    candidates: list[str] = field(default_factory=list)
    chosen: int = 0
    kind: str = "choice"
    divisors: torch.Tensor | None = None  # [K]
    offsets: torch.Tensor | None = None  # [K]
    encoded: list[list[int]] = field(default_factory=list)

    # -- what is explained -------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return 1

    @cached_property
    def target_tokens(self) -> list[str]:
        label = "choice of" if self.kind == "choice" else "margin of"
        return [f"{label} {self.candidates[self.chosen]!r}"]

    @property
    def extra_tokens(self) -> int:
        return self.packed.width

    def record_extras(self) -> dict[str, Any]:
        extras = super().record_extras()
        extras.update(
            objective=self.kind,
            candidates=list(self.candidates),
            chosen=self.chosen,
            divisors=self._divisors.tolist(),
            offsets=self._offsets.tolist(),
        )
        return extras

    @cached_property
    def packed(self) -> PackedCandidates:
        return pack_candidates([self.encoded])

    @cached_property
    def _divisors(self) -> torch.Tensor:
        k = len(self.candidates)
        return torch.ones(k) if self.divisors is None else self.divisors.float()

    @cached_property
    def _offsets(self) -> torch.Tensor:
        k = len(self.candidates)
        return torch.zeros(k) if self.offsets is None else self.offsets.float()

    # -- forward -----------------------------------------------------------------------

    def row_log_probs(
        self,
        prompt_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """[B, P, D] prompt embeddings -> [B, 1, K]: the log-softmax over the candidates of
        their adjusted scores (differentiable).

        `attention_mask` [B, P] hides prompt positions (perturbations); `lengths` [B] says
        where each prompt ends when shorter ones are padded at the end; with `prefix`, the
        first `start` positions come from that cache and `prompt_embeds` holds the others.
        """
        scores = self.candidate_scores(prompt_embeds, attention_mask, lengths, prefix, start)
        return torch.log_softmax(scores, dim=-1).unsqueeze(1)

    def candidate_scores(
        self,
        prompt_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """[B, K] adjusted scores a_k (see the class) for each prompt of the batch."""
        model, device, dtype = self.lm.model, self.lm.device, self.lm.dtype
        batch, run = prompt_embeds.shape[0], prompt_embeds.shape[1]
        total = start + run  # prompt positions, the cached ones included
        packed = self.packed
        width = packed.width
        ids = packed.ids[0].to(device)
        owner = packed.owner[0].to(device)
        offset = packed.offset[0].to(device)
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long)
        lengths = lengths.to(device)
        if int(lengths.min()) <= start:
            raise ValueError("every prompt must end after the cached prefix")
        visible = torch.ones((batch, total), dtype=torch.bool, device=device)
        if attention_mask is not None:
            visible[:, total - attention_mask.shape[1] :] = attention_mask.to(device).bool()
        visible &= torch.arange(total, device=device) < lengths.unsqueeze(1)

        # allowed[b, i, j] over the prompt (cached and run) then the block, for the queries
        # that run: a prompt token sees the visible prompt up to itself; a candidate token
        # sees the visible prompt and its own candidate's earlier tokens.
        queries = torch.arange(start, total, device=device)
        keys = torch.arange(total, device=device)
        causal = (keys.unsqueeze(0) <= queries.unsqueeze(1)).unsqueeze(0)
        itself = (keys.unsqueeze(0) == queries.unsqueeze(1)).unsqueeze(0)
        prompt_rows = (causal & visible.unsqueeze(1)) | itself
        prompt_rows = torch.cat(
            [prompt_rows, torch.zeros((batch, run, width), dtype=torch.bool, device=device)], 2
        )
        block_rows = torch.cat(
            [
                visible.unsqueeze(1).expand(batch, width, total),
                packed.own_visibility()[0].to(device).expand(batch, width, width),
            ],
            dim=2,
        )
        mask = additive_mask(torch.cat([prompt_rows, block_rows], dim=1), dtype)
        positions = torch.cat(
            [queries.expand(batch, run), lengths.unsqueeze(1) + offset.unsqueeze(0)], dim=1
        )
        embeds = torch.cat(
            [prompt_embeds.to(dtype), self.lm.embeddings(ids).to(dtype).expand(batch, -1, -1)],
            dim=1,
        )
        kwargs: dict[str, Any] = {}
        if prefix is not None and start > 0:
            kwargs = prefix.arguments(batch, start)
        # The sequence index (within the run) whose logits predict each block token: each
        # prompt's last position for a candidate's first token, else the previous token.
        last_prompt = lengths - 1 - start  # [B]
        source = torch.where(
            offset.unsqueeze(0) == 0,
            last_prompt.unsqueeze(1),
            (run + torch.arange(width, device=device) - 1).unsqueeze(0),
        )  # [B, W]
        index = source
        if self.lm.keeps_logits:
            # Only those rows meet the vocabulary projection (padded variants of different
            # lengths would otherwise project every position between their ends).
            kept = torch.unique(source)
            kwargs["logits_to_keep"] = kept
            index = torch.searchsorted(kept, source)
        logits = model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs
        ).logits
        rows = logits[torch.arange(batch, device=device).unsqueeze(1), index]
        rows = rows.float()
        token_lp = rows.gather(-1, ids.view(1, -1, 1).expand(batch, -1, 1)).squeeze(-1)
        token_lp = token_lp - torch.logsumexp(rows, dim=-1)  # [B, W]
        sums = torch.zeros((batch, len(self.candidates)), device=device, dtype=token_lp.dtype)
        sums = sums.index_add(1, owner, token_lp)
        return sums / self._divisors.to(device) - self._offsets.to(device)

    def values_from_log_probs(self, logp: torch.Tensor) -> torch.Tensor:
        """[B, 1, K] log-probabilities over the candidates -> [B, 1] objective values."""
        chosen = logp[:, :, self.chosen]
        if self.kind == "choice":
            return chosen
        others = torch.cat([logp[:, :, : self.chosen], logp[:, :, self.chosen + 1 :]], dim=-1)
        return chosen - others.max(dim=-1).values

    def log_probs_for_ids(
        self,
        prompts: Sequence[np.ndarray],
        filler: int,
        prefix: PrefixCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """[N, 1, K] for prompts of any lengths (perturbations that delete tokens), padded
        at the end and run in one forward; with `prefix`, every prompt's first `start`
        tokens are the cached ones (its first `start` prompt tokens) and only the rest run."""
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        rows = np.full((len(prompts), int(lengths.max()) - start), filler, dtype=np.int64)
        for i, p in enumerate(prompts):
            rows[i, : len(p) - start] = p[start:]
        embeds = self.embed(torch.from_numpy(rows))
        return self.row_log_probs(embeds, lengths=lengths, prefix=prefix, start=start)

    def predicted_candidate(self) -> int:
        with torch.no_grad():
            return int(self.row_log_probs(self.input_embeddings.unsqueeze(0))[0, 0].argmax())


def prepare_choice(
    lm: LoadedModel,
    text: str,
    candidates: Sequence[str],
    chosen: str | None = None,
    *,
    objective: str = "choice",
    score_mode: str = "sum",
    offsets: Sequence[float] | None = None,
    divisors: Sequence[float] | None = None,
) -> ChoiceObjective:
    """The choice (or margin) objective of a decision among `candidates` after `text`.

    `chosen` defaults to the model's own top-scoring candidate. `score_mode` is the agent's
    ("sum" or "mean"; "calibrated" scores come in as `offsets`: the neutral prompt's
    log-probabilities), and `offsets` adds any constant per candidate (a repeat penalty);
    `divisors`, where given, replace the score mode's (a stored explanation's own).
    """
    if objective not in CHOICE_OBJECTIVES:
        raise WorkbenchError(f"a choice objective is choice or margin, not {objective!r}")
    if lm.kind == "classifier":
        raise WorkbenchError("choice objectives explain a causal LM's decision, not a classifier's")
    cands = [str(c) for c in candidates]
    if len(cands) < 2:
        raise WorkbenchError(
            f"a choice needs at least two candidates; this decision has {len(cands)}"
        )
    if len(set(cands)) != len(cands):
        raise WorkbenchError("the candidates repeat a command; give each once")
    if any(not c.strip() for c in cands):
        raise WorkbenchError("a candidate is empty")
    if chosen is not None and chosen not in cands:
        raise WorkbenchError(f"the chosen command {chosen!r} is not among the candidates")
    if score_mode not in ("sum", "mean"):
        raise WorkbenchError(f"score_mode must be sum or mean here, not {score_mode!r}")
    if offsets is not None and len(offsets) != len(cands):
        raise WorkbenchError("give one offset per candidate")
    encoded = encode_candidates(lm.tokenizer, cands)
    if divisors is None:
        divisors = [float(len(e)) if score_mode == "mean" else 1.0 for e in encoded]
    if len(divisors) != len(cands):
        raise WorkbenchError("give one divisor per candidate")
    obj = ChoiceObjective(
        lm,
        text,
        _prompt_ids(lm, text),
        torch.zeros(0, dtype=torch.long),
        candidates=cands,
        chosen=0,
        kind=objective,
        divisors=torch.tensor(list(divisors), dtype=torch.float32),
        offsets=None if offsets is None else torch.tensor(list(offsets), dtype=torch.float32),
        encoded=encoded,
    )
    obj.chosen = cands.index(chosen) if chosen is not None else obj.predicted_candidate()
    obj.target_ids = torch.tensor(encoded[obj.chosen], dtype=torch.long)
    return obj


def rebuild_choice(lm: LoadedModel, text: str, extras: dict[str, Any]) -> ChoiceObjective:
    """The choice objective a stored explanation recorded (`ChoiceObjective.record_extras`):
    same candidates, chosen one, divisors and offsets."""
    candidates = extras["candidates"]
    return prepare_choice(
        lm,
        text,
        candidates,
        candidates[int(extras["chosen"])],
        objective=extras["objective"],
        offsets=extras.get("offsets"),
        divisors=extras.get("divisors"),
    )
