"""The local backend: a transformers causal LM, with the prompts of all parallel games
batched into one forward pass.

Scoring runs each prompt once and keeps its key/value cache; every candidate command is
then a short continuation of that cache, so ranking 15 commands after a 600-token prompt
costs about one prompt's forward instead of fifteen.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.llm.base import LLM, CandidateScores, Completion
from workbench.llm.candidates import additive_mask, encode_candidates, pack_candidates
from workbench.models import LoadedModel
from workbench.prefix_cache import cache_argument, output_cache

# A prompt that says nothing about the game: the baseline of calibrated scores.
NEUTRAL_PROMPT = "Type a command."


def machine_threads() -> int:
    """The cores this process may use, or $WORKBENCH_THREADS."""
    explicit = os.environ.get("WORKBENCH_THREADS")
    if explicit:
        return max(1, int(explicit))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def sane_threads() -> int:
    """Torch threads that leave a core free for the game workers: on a shared CPU,
    oversubscribed threads made a step about 20x slower than one thread.
    $WORKBENCH_THREADS overrides."""
    if os.environ.get("WORKBENCH_THREADS"):
        return machine_threads()
    return max(1, machine_threads() - 1)


class LocalLLM(LLM):
    """A loaded causal LM as an `LLM`.

    Args:
        lm: from `workbench.models.load_model` (or `from_pretrained_objects`).
        max_batch: prompts per forward pass; larger batches are split.
        spare_core: on a CPU, leave a core to the game worker processes that play beside
            the model (`sane_threads`); off where no game runs (explaining a recorded step).
    """

    backend = "local"

    def __init__(self, lm: LoadedModel, max_batch: int = 64, spare_core: bool = True):
        if lm.kind != "causal":
            raise ValueError(f"{lm.name} is a classifier; the agent needs a causal LM")
        self.lm = lm
        self.model = lm.name
        self.max_batch = max_batch
        self._neutral: dict[str, tuple[float, int]] = {}
        argument = cache_argument(lm.model)
        if argument is None:
            raise WorkbenchError(
                f"{lm.name} takes no key/value cache; the local backend scores candidate "
                "commands as continuations of the prompt's cache"
            )
        self._cache_kwarg = argument
        # Only the prompt's last position is read: computing the vocabulary projection at
        # every position (64 prompts x 700 tokens x 49k words) costs more than the model.
        self._last_logits = {"logits_to_keep": 1} if lm.keeps_logits else {}
        if lm.device.type == "cpu" and spare_core:
            torch.set_num_threads(min(torch.get_num_threads(), sane_threads()))

    # -- prompts ---------------------------------------------------------------------------

    def format_prompt(self, prompt: str, system: str | None = None) -> str:
        """The text the model sees: the chat template where the tokenizer has one."""
        tok = self.lm.tokenizer
        if getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{system}\n\n{prompt}\n" if system else f"{prompt}\n"

    def _encode(self, text: str) -> list[int]:
        return self._encode_many([text])[0]

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        # One call for the whole batch: per-string calls cost more than the GPU forward
        # at 64 games (thousands of candidate commands per step).
        if not texts:
            return []
        return [
            list(ids) for ids in self.lm.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.lm.tokenizer.pad_token_id or 0
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
        return ids.to(self.lm.device), mask.to(self.lm.device)

    # -- generation ------------------------------------------------------------------------

    def _complete(
        self, prompts: list[str], max_tokens: int, temperature: float, system: str | None
    ) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(prompts), self.max_batch):
            out.extend(
                self._complete_batch(
                    prompts[start : start + self.max_batch], max_tokens, temperature, system
                )
            )
        return out

    @torch.inference_mode()
    def _complete_batch(
        self, prompts: list[str], max_tokens: int, temperature: float, system: str | None
    ) -> list[Completion]:
        tok = self.lm.tokenizer
        rows = self._encode_many([self.format_prompt(p, system) for p in prompts])
        ids, mask = self._left_pad(rows)
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            gen_kwargs["temperature"] = temperature
        else:
            # Greedy: unset the sampling knobs a model's generation_config may carry.
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        started = time.perf_counter()
        generated = self.lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            pad_token_id=tok.pad_token_id,
            **gen_kwargs,
        )
        latency = (time.perf_counter() - started) / len(prompts)
        stop_ids = {tok.eos_token_id, tok.pad_token_id}
        results = []
        for prompt, row, new in zip(prompts, rows, generated[:, ids.shape[1] :].tolist()):
            kept = []
            for t in new:
                if t in stop_ids:
                    break
                kept.append(t)
            text = tok.decode(kept, skip_special_tokens=True)
            results.append(Completion(prompt, text, len(row), len(kept), latency, None, params))
        return results

    # -- scoring ---------------------------------------------------------------------------

    def score(
        self, prompts: list[str], candidates: list[list[str]], *, calibrate: bool = False
    ) -> list[CandidateScores]:
        started = time.perf_counter()
        texts = [self.format_prompt(p) for p in prompts]
        sums, lengths, prompt_lens = self._continuation_logprobs(texts, candidates)
        calibrated = None
        if calibrate:
            neutral = self.neutral_logprobs({c for cs in candidates for c in cs})
            calibrated = [
                [s - neutral[c][0] for s, c in zip(row, cs)] for row, cs in zip(sums, candidates)
            ]
        latency = (time.perf_counter() - started) / max(len(prompts), 1)
        return [
            CandidateScores(p, list(cs), s, n, pl, latency, calibrated[i] if calibrated else None)
            for i, (p, cs, s, n, pl) in enumerate(
                zip(prompts, candidates, sums, lengths, prompt_lens)
            )
        ]

    def neutral_logprobs(self, commands: set[str]) -> dict[str, tuple[float, int]]:
        # Cached across calls: the same few hundred commands recur in every game.
        missing = sorted(c for c in commands if c not in self._neutral)
        if missing:
            text = self.format_prompt(NEUTRAL_PROMPT)
            sums, lengths, _ = self._continuation_logprobs([text], [missing])
            self._neutral.update(zip(missing, zip(sums[0], lengths[0])))
        return self._neutral

    def _continuation_logprobs(
        self, texts: list[str], candidates: list[list[str]]
    ) -> tuple[list[list[float]], list[list[int]], list[int]]:
        sums: list[list[float]] = [[] for _ in texts]
        lengths: list[list[int]] = [[] for _ in texts]
        prompt_lens: list[int] = [0] * len(texts)
        for start in range(0, len(texts), self.max_batch):
            chunk = range(start, min(start + self.max_batch, len(texts)))
            chunk_lens = self._score_batch(
                [texts[i] for i in chunk],
                [candidates[i] for i in chunk],
                [sums[i] for i in chunk],
                [lengths[i] for i in chunk],
            )
            for i, n in zip(chunk, chunk_lens):
                prompt_lens[i] = n
        return sums, lengths, prompt_lens

    @torch.inference_mode()
    def _score_batch(
        self,
        texts: list[str],
        candidates: list[list[str]],
        sums_out: list[list[float]],
        lengths_out: list[list[int]],
    ) -> list[int]:
        """Score every candidate of every prompt in two forward passes; returns prompt lengths.

        Pass 1 runs the (left-padded) prompts and keeps their cache. Pass 2 puts all of a
        prompt's candidates side by side in one row after its cache, with a 4D attention
        mask so that each candidate sees the prompt and its own earlier tokens only, and
        positions that restart after the prompt for each candidate. The cache is never
        copied per candidate, which on a CPU cost more than the model itself.
        """
        model, device = self.lm.model, self.lm.device
        rows = self._encode_many(texts)
        ids, mask = self._left_pad(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **self._last_logits,
        )
        first_logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        cache = output_cache(out)

        encoded = [encode_candidates(self.lm.tokenizer, cs) for cs in candidates]
        packed = pack_candidates(encoded)
        width = packed.width
        if width == 0:
            return [len(r) for r in rows]
        batch, prompt_width = ids.shape
        cand_ids = packed.ids
        cand_pos = packed.positions(torch.tensor([len(r) for r in rows]))
        # allowed[b, i, j]: may candidate token i see key j (prompt keys, then candidates)?
        prompt_keys = mask.bool().cpu().unsqueeze(1).expand(batch, width, prompt_width)
        allowed = torch.cat([prompt_keys, packed.own_visibility()], dim=2)
        mask4d = additive_mask(allowed, self.lm.dtype)
        logits = model(
            input_ids=cand_ids.to(device),
            attention_mask=mask4d.to(device),
            position_ids=cand_pos.to(device),
            use_cache=True,
            **{self._cache_kwarg: cache},
        ).logits
        for b, cs in enumerate(encoded):
            # Each candidate's first token comes from the prompt's last position.
            first = first_logprobs[b, torch.tensor([c[0] for c in cs], device=device)].tolist()
            # One row at a time: a float copy of the whole batch's logits (rows x tokens x
            # vocabulary) would take gigabytes at 64 games.
            row = torch.log_softmax(logits[b].float(), dim=-1)
            following = row[:-1].gather(1, cand_ids[b, 1:, None].to(device)).squeeze(1).tolist()
            at = 0
            for c, first_lp in zip(cs, first):
                sums_out[b].append(first_lp + sum(following[at : at + len(c) - 1]))
                lengths_out[b].append(len(c))
                at += len(c)
        return [len(r) for r in rows]

    @property
    def model_info(self) -> dict[str, Any]:
        return self.lm.identity.to_dict()

    def describe(self) -> dict[str, Any]:
        described = {"backend": self.backend, "model": self.model, "dtype": str(self.lm.dtype)}
        # Recorded with every run (and checked when one resumes): a fine-tuned agent is
        # another agent than its base model.
        if self.lm.adapter:
            described["adapter"] = self.lm.adapter
            described["adapter_sha256"] = self.lm.adapter_sha256
        return described
