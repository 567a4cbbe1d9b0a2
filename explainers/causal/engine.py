"""Batched patched forward passes: many interventions per forward, the batch index being
the intervention (as nnsight and pyvene batch them).

A `Patcher` holds one *base* run (the input every patched run starts from) and the cached
activations of one *source* run (where patched values come from). A patched run is a list
of `Patch`es: "at hook `name`, position `position` (or all), group `group` (a head, or
all), take the source's value". `Patcher.values(rows)` scores many such runs, batched.

Two engines compute the same numbers:

- `full`: the whole model on a batch of copies of the base input, with hooks that write
  each row's patches. Works for every supported model (decoders, BERT, classifiers).
- `suffix` (causal LMs): a patch at block l and position p changes nothing before block l
  and nothing before position p. So the base run's inputs of every block are cached once,
  and a batch of patched runs starts at its earliest block, on its positions from the
  earliest patched one, attending to the base run's keys and values for the positions
  before (a prefix cache). Block arguments (masks, rotary embeddings, position ids) are
  recorded from the model's own forward pass, so no architecture is re-implemented. The
  final norm and unembedding read only the target positions. Once per model, the tail is
  checked against the model's own logits; a model whose head does more (soft-capping,
  scaling) uses the full engine. Hooks and caches come from workbench.anatomy and
  workbench.prefix_cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from explainers.explainer import Progress
from workbench.anatomy import Anatomy, HookPoint, Hooks, first_tensor, forward_logits, trunk
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prefix_cache import PrefixCache, cache_argument, compute_prefix, verdict

ENGINES = ("auto", "suffix", "full")


class Patch(NamedTuple):
    """Write the source's activation at hook `name`, at `position` (None: every position),
    into `group` (a head for z; None: the whole vector)."""

    name: str
    position: int | None = None
    group: int | None = None


# -- what a run is scored by ----------------------------------------------------------------


@dataclass
class Readout:
    """The scalar a run is judged by, from the log-probabilities at the target rows.

    Causal LM: row t is the distribution over target token t (teacher-forced); the value is
    the sum over rows of log p(target_t), minus log p(contrast_t) with a contrast (equal to
    the logit difference, read at the same position). Classifier: one row, the labels.
    """

    target_ids: torch.Tensor  # [T] token ids, or [1] a label index
    contrast_ids: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return int(self.target_ids.numel())

    @property
    def metric(self) -> str:
        return "logprob" if self.contrast_ids is None else "logit_diff"

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, T, V] logits -> [B] values (differentiable)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        index = self.target_ids.to(logp.device).view(1, -1, 1).expand(logp.shape[0], -1, 1)
        values = logp.gather(-1, index).squeeze(-1)
        if self.contrast_ids is not None:
            other = self.contrast_ids.to(logp.device).view(1, -1, 1).expand_as(index)
            values = values - logp.gather(-1, other).squeeze(-1)
        return values.sum(-1)


# -- the patcher ----------------------------------------------------------------------------


@dataclass
class _Suffix:
    """The base run from position `start` on: each block's input and call arguments."""

    start: int
    prefix: PrefixCache | None  # the base run's keys/values before `start` (None at 0)
    hidden: list[torch.Tensor]  # per block: its input hidden states [1, n - start, D]
    calls: list[tuple[tuple, dict]]  # per block: the other arguments it was called with


@dataclass
class Patcher:
    """Patched runs of one base input with activations of one source input.

    Args:
        lm / hooks: the model and its anatomy (hook points).
        readout: what a run is scored by.
        base: [n, D] input embeddings every patched run starts from.
        source: {hook name: [n, width]} the values patches write (aligned with `base`'s
            positions).
        engine: "auto" (suffix for causal LMs whose head checks out, else full), "suffix"
            or "full".
        batch_size: patched runs per forward; None: as many as fit `token_budget`.
        token_budget: positions computed per forward when batch_size is None (default:
            16384 on a GPU, 2048 on a CPU).
    """

    lm: LoadedModel
    hooks: Anatomy
    readout: Readout
    base: torch.Tensor
    source: dict[str, torch.Tensor]
    engine: str = "auto"
    batch_size: int | None = None
    token_budget: int | None = None
    _suffixes: dict[int, _Suffix] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise WorkbenchError(f"unknown engine {self.engine!r}; choose {', '.join(ENGINES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise WorkbenchError("batch_size must be >= 1")
        if self.engine == "auto":
            self.engine = "suffix" if self._suffix_applies() else "full"
        elif self.engine == "suffix" and not self._suffix_applies():
            raise WorkbenchError(
                f"the suffix engine needs a causal LM whose blocks take a key/value cache and "
                f"whose logits are final norm + unembedding; use engine='full' for {self.lm.name}"
            )

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    # -- public ---------------------------------------------------------------------------

    def values(self, rows: list[list[Patch]], progress: Progress | None = None) -> np.ndarray:
        """The readout of each patched run (float64, in `rows` order)."""
        out = np.zeros(len(rows), dtype=np.float64)
        points = {p.name: self.hooks.point(p.name) for row in rows for p in row}
        for p in (p for row in rows for p in row):
            if p.position is not None and not 0 <= p.position < self.n:
                raise WorkbenchError(f"patch position {p.position} is outside 0 .. {self.n - 1}")
        done = 0
        for batch, block, start in self._batches(rows, points):
            values = self._run(batch, [rows[i] for i in batch], points, block, start)
            out[batch] = values.detach().double().cpu().numpy()
            done += len(batch)
            if progress is not None:
                progress(done, len(rows))
        return out

    # -- batching -------------------------------------------------------------------------

    def _token_budget(self) -> int:
        if self.token_budget is not None:
            return self.token_budget
        return 16384 if self.lm.device.type == "cuda" else 2048

    def _batches(
        self, rows: list[list[Patch]], points: dict[str, HookPoint]
    ) -> list[tuple[list[int], int, int]]:
        """Row indices per forward, with the block and position the forward starts at."""

        def first_position(row: list[Patch]) -> int:
            return min((0 if p.position is None else p.position) for p in row) if row else 0

        def first_block(row: list[Patch]) -> int:
            return min(points[p.name].block for p in row) if row else self.hooks.n_layers - 1

        if self.engine == "full":
            size = self.batch_size or max(1, self._token_budget() // self.n)
            return [
                (list(range(k, min(k + size, len(rows)))), 0, 0) for k in range(0, len(rows), size)
            ]
        order = sorted(
            range(len(rows)), key=lambda i: (first_block(rows[i]), first_position(rows[i]))
        )
        # Greedy, in (block, position) order: a batch runs from its first row's block and
        # position, and takes rows while they fit the token budget. A row that would move
        # the start back (the next block, from position 0 again) opens a new batch, unless
        # the batch computes every position already: short prompts fill whole batches with
        # the rows of several blocks.
        batches: list[tuple[list[int], int, int]] = []
        k = 0
        while k < len(order):
            block, start = first_block(rows[order[k]]), first_position(rows[order[k]])
            size = self.batch_size or max(1, self._token_budget() // (self.n - start))
            batch = [order[k]]
            k += 1
            while k < len(order) and len(batch) < size:
                if first_position(rows[order[k]]) < start:
                    break
                batch.append(order[k])
                k += 1
            batches.append((batch, block, start))
        return batches

    def _masks(
        self, rows: list[list[Patch]], points: dict[str, HookPoint], start: int
    ) -> dict[str, torch.Tensor]:
        """{name: [B, n - start, groups] bool}: where each row takes the source's value."""
        width = self.n - start
        masks: dict[str, torch.Tensor] = {}
        for r, row in enumerate(rows):
            for p in row:
                groups = points[p.name].groups
                mask = masks.get(p.name)
                if mask is None:
                    mask = masks[p.name] = torch.zeros(len(rows), width, groups, dtype=torch.bool)
                pos = slice(None) if p.position is None else p.position - start
                grp = slice(None) if p.group is None else p.group
                mask[r, pos, grp] = True
        return {k: v.to(self.lm.device) for k, v in masks.items()}

    def _patching_hooks(
        self, rows: list[list[Patch]], points: dict[str, HookPoint], start: int
    ) -> Hooks:
        active = Hooks()
        for name, mask in self._masks(rows, points, start).items():
            point = points[name]
            source = self.source[name][start:]

            def write(
                x: torch.Tensor, mask: torch.Tensor = mask, source: torch.Tensor = source
            ) -> torch.Tensor:
                b, m, w = x.shape
                g = mask.shape[-1]
                # .to() is free on one device; a model split over GPUs (device_map) has
                # blocks on others.
                src = source.to(x.device, x.dtype).view(1, m, g, w // g)
                where = mask.to(x.device).unsqueeze(-1)
                out = torch.where(where, src, x.view(b, m, g, w // g))
                return out.view(b, m, w)

            active.add(point, write)
        return active

    # -- running --------------------------------------------------------------------------

    def _run(
        self,
        batch: list[int],
        rows: list[list[Patch]],
        points: dict[str, HookPoint],
        block: int,
        start: int,
    ) -> torch.Tensor:
        # The base run's record is made before any patching hook is in place.
        suffix = self._suffix(start) if self.engine == "suffix" else None
        with self._patching_hooks(rows, points, start):
            if suffix is None:
                embeds = self.base.unsqueeze(0).expand(len(batch), -1, -1)
                logits = forward_logits(self.lm, embeds, self.readout.rows)
            else:
                logits = self._run_suffix(suffix, len(batch), block)
        return self.readout.values(logits)

    def _run_suffix(self, suffix: _Suffix, size: int, block: int) -> torch.Tensor:
        cache = None if suffix.prefix is None else suffix.prefix.for_batch(size)
        hidden = suffix.hidden[block].expand(size, -1, -1)
        with torch.no_grad():
            for b in range(block, self.hooks.n_layers):
                args, kwargs = _with_cache(*suffix.calls[b], cache)
                hidden = first_tensor(self.hooks.blocks[b](hidden, *args, **kwargs))
            return self._tail(hidden[:, -self.readout.rows :])

    def _tail(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.hooks.final_norm is not None:
            hidden = self.hooks.final_norm(hidden)
        return self.hooks.unembed(hidden)

    def _suffix(self, start: int) -> _Suffix:
        """Record the base run from position `start` (once per start position)."""
        if start in self._suffixes:
            return self._suffixes[start]
        base_model = trunk(self.lm)
        prefix = None
        with torch.no_grad():
            if start > 0:
                prefix, _ = compute_prefix(base_model, inputs_embeds=self.base[:start].unsqueeze(0))
                if prefix is None:
                    raise WorkbenchError(
                        f"the suffix engine cannot reuse {self.lm.name}'s key/value cache; "
                        "use engine='full'"
                    )
            hidden: list[torch.Tensor] = []
            calls: list[tuple[tuple, dict]] = []

            def record(module, args, kwargs):
                if args:
                    hidden.append(args[0])
                    calls.append((args[1:], dict(kwargs)))
                else:
                    hidden.append(kwargs["hidden_states"])
                    calls.append(((), {k: v for k, v in kwargs.items() if k != "hidden_states"}))

            handles = [
                b.register_forward_pre_hook(record, with_kwargs=True) for b in self.hooks.blocks
            ]
            try:
                kwargs = {"use_cache": False} if prefix is None else prefix.arguments(1)
                base_model(inputs_embeds=self.base[start:].unsqueeze(0), **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
        suffix = _Suffix(start, prefix, hidden, calls)
        self._suffixes[start] = suffix
        return suffix

    def _suffix_applies(self) -> bool:
        """A causal LM whose blocks can be run from a recorded call and whose logits are
        exactly final norm + unembedding of the last block's output."""
        if self.lm.kind != "causal" or self.hooks.unembed is None:
            return False
        if self.n < 2 or cache_argument(trunk(self.lm)) is None:
            return False
        # Once per model (causal tracing builds a Patcher per noise sample).
        return verdict(self.lm.model, "suffix engine", self._suffix_matches)

    def _suffix_matches(self) -> bool:
        """The check behind `_suffix_applies`, on this patcher's base input: the model's
        cache can be reused, the recorded last block plus final norm and unembedding give
        the model's logits, and attention is causal."""
        prefix, _ = compute_prefix(trunk(self.lm), inputs_embeds=self.base[:1].unsqueeze(0))
        if prefix is None:
            return False
        rows = self.readout.rows
        full = forward_logits(self.lm, self.base.unsqueeze(0), rows)[0].float()
        suffix = self._suffix(0)
        with torch.no_grad():
            last = first_tensor(
                self.hooks.blocks[-1](
                    suffix.hidden[-1], *suffix.calls[-1][0], **suffix.calls[-1][1]
                )
            )
            # .to(): with a model split over GPUs (--device-map) the tail ends on the last one.
            tail = self._tail(last[:, -rows:])[0].float().to(full.device)
            # Causal attention: changing the last input leaves every earlier state alone
            # (a BERT-style model loaded as an LM attends both ways).
            changed = self.base.clone()
            changed[-1] = 0
            states = [
                trunk(self.lm)(inputs_embeds=e.unsqueeze(0)).last_hidden_state[0, :-1]
                for e in (self.base, changed)
            ]
        tolerance = 1e-4 if self.lm.dtype == torch.float32 else 3e-2
        drift = (states[0].float() - states[1].float()).abs().max()
        causal = bool(drift <= 1e-4 * (float(states[0].float().abs().max()) or 1.0))
        scale = float(full.abs().max()) or 1.0
        return causal and bool((tail - full).abs().max() <= tolerance * scale)


def _with_cache(args: tuple, kwargs: dict, cache: Any) -> tuple[tuple, dict]:
    """A block's recorded arguments with its cache object swapped for `cache`."""
    from transformers.cache_utils import Cache

    swap = lambda v: cache if isinstance(v, Cache) else v  # noqa: E731
    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}
