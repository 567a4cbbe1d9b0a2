"""Candidate commands side by side after their prompt: one forward scores them all.

An agent that ranks commands needs log p(command | prompt) for every candidate. Rather than
one sequence per candidate (the prompt's work repeated K times) the candidates of a prompt
are packed into one block after it: each candidate token sees the prompt and the earlier
tokens of its own candidate only (a 4D attention mask), and its position continues the
prompt's as if it were the only continuation. The local backend scores this way on the
prompt's cache (`workbench.llm.local`), and the choice objective of the explainers
differentiates through it (`explainers.choice`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def encode_candidates(tokenizer, candidates: list[str]) -> list[list[int]]:
    """Token ids of each candidate (no special tokens); a candidate that tokenizes to nothing
    stands as the EOS token, so that it still gets a score."""
    if not candidates:
        return []
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(candidates), add_special_tokens=False)["input_ids"]
    return [list(c) or [eos] for c in ids]


@dataclass(frozen=True)
class PackedCandidates:
    """Several prompts' candidates, one block per prompt, padded to one width.

    `owner[b, w]` is the candidate of block token w (-1 for padding) and `offset[b, w]` its
    index within that candidate.
    """

    ids: torch.Tensor  # [B, W]
    owner: torch.Tensor  # [B, W]
    offset: torch.Tensor  # [B, W]

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    def positions(self, starts: torch.Tensor) -> torch.Tensor:
        """[B, W] position ids: each candidate restarts right after its prompt's `starts[b]`
        tokens."""
        return starts.view(-1, 1).to(self.offset.device) + self.offset

    def own_visibility(self) -> torch.Tensor:
        """[B, W, W] bool: may block token i see block token j (same candidate, not later)?
        Padding tokens see themselves, so that no attention row is empty (NaN)."""
        width = self.width
        same = self.owner.unsqueeze(2) == self.owner.unsqueeze(1)
        causal = torch.ones((width, width), dtype=torch.bool, device=self.ids.device).tril()
        own = same & causal & (self.owner.unsqueeze(2) >= 0)
        return own | torch.eye(width, dtype=torch.bool, device=self.ids.device)


def pack_candidates(encoded: list[list[list[int]]]) -> PackedCandidates:
    """Pack each prompt's encoded candidates (`encode_candidates`) into one block per prompt."""
    batch = len(encoded)
    width = max((sum(len(c) for c in cs) for cs in encoded), default=0)
    ids = torch.zeros((batch, width), dtype=torch.long)
    owner = torch.full((batch, width), -1, dtype=torch.long)
    offset = torch.zeros((batch, width), dtype=torch.long)
    for b, cs in enumerate(encoded):
        at = 0
        for k, c in enumerate(cs):
            ids[b, at : at + len(c)] = torch.tensor(c)
            owner[b, at : at + len(c)] = k
            offset[b, at : at + len(c)] = torch.arange(len(c))
            at += len(c)
    return PackedCandidates(ids, owner, offset)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] bool -> the [B, 1, Q, K] additive attention mask a model takes (0 where a
    query may attend, the dtype's minimum where it may not)."""
    blocked = torch.finfo(dtype).min
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, blocked).unsqueeze(1)
