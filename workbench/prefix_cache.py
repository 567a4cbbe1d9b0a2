"""The key/value cache of a shared prompt prefix: computed once, reused by many suffixes.

Several computations run many inputs that share a beginning: perturbed prompts that keep a
prompt's first tokens, probe questions after one long game prompt, patched runs that change
nothing before some position, candidate commands after one agent prompt. A causal LM's
keys and values for the shared positions do not depend on what follows, so they are
computed once (`compute_prefix`) and each batch of suffixes runs on a cache of them
(`PrefixCache.for_batch`), expanded to the batch without a copy.

Only a plain `DynamicCache` of full-attention layers is reused: a sliding-window, recurrent
or legacy cache is refused (None), and the caller runs its inputs in full. Whether reuse
gives a model's own numbers is checked once per model by the caller and remembered here
(`verdict`).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# transformers 5.2x renames `past_key_values` to `cache`, model by model.
CACHE_ARGUMENTS = ("cache", "past_key_values")

_ARGUMENTS: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()
_VERDICTS: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, bool]] = weakref.WeakKeyDictionary()


def cache_argument(module: torch.nn.Module) -> str | None:
    """The keyword `module`'s forward takes its key/value cache by (None: it takes none);
    read once per class."""
    kind = type(module)
    if kind not in _ARGUMENTS:
        parameters = inspect.signature(module.forward).parameters
        _ARGUMENTS[kind] = next((a for a in CACHE_ARGUMENTS if a in parameters), None)
    return _ARGUMENTS[kind]


def output_cache(output: Any) -> Any:
    """The cache a forward returned (under either name), or None."""
    for name in CACHE_ARGUMENTS:
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    return None


@dataclass(frozen=True)
class PrefixCache:
    """One prefix's keys and values, layer by layer ([1, kv heads, length, head dim] each),
    and the keyword the model takes a cache by."""

    argument: str
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[-2])

    def for_batch(self, batch: int, length: int | None = None) -> Any:
        """A fresh cache of the first `length` positions (all by default) for `batch`
        sequences. The tensors are expanded views: a forward appends to new tensors and
        never writes into the prefix's."""
        from transformers import DynamicCache

        end = self.length if length is None else length
        return DynamicCache(
            ddp_cache_data=[
                (
                    k[:, :, :end].expand(batch, -1, -1, -1),
                    v[:, :, :end].expand(batch, -1, -1, -1),
                )
                for k, v in self.layers
            ]
        )

    def arguments(self, batch: int, length: int | None = None) -> dict[str, Any]:
        """The forward's keyword arguments that continue this prefix (see `for_batch`)."""
        return {self.argument: self.for_batch(batch, length), "use_cache": True}


@torch.no_grad()
def compute_prefix(
    module: torch.nn.Module, length: int | None = None, **inputs: Any
) -> tuple[PrefixCache | None, Any]:
    """Run `module` (a causal LM or its base model) on `inputs` with a fresh cache; returns
    the first `length` positions' keys and values (all by default), or None where the
    model's cache cannot be reused, and the forward's output (None, None without running
    where the model takes no cache)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    argument = cache_argument(module)
    if argument is None:
        return None, None
    config = getattr(module, "config", None)
    # From the config: a sliding-window model gets its sliding layers, which are refused.
    cache = DynamicCache(config=config) if config is not None else DynamicCache()
    output = module(**inputs, **{argument: cache, "use_cache": True})
    cache = output_cache(output) or cache
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not layers:
        return None, output
    if any(type(layer) is not DynamicLayer or layer.keys is None for layer in layers):
        return None, output
    if any(layer.keys.dim() != 4 for layer in layers):
        return None, output
    total = int(layers[0].keys.shape[-2])
    end = total if length is None else length
    if any(layer.keys.shape[-2] != total for layer in layers) or end > total:
        return None, output
    kept = tuple((layer.keys[:, :, :end], layer.values[:, :, :end]) for layer in layers)
    return PrefixCache(argument, kept), output


def verdict(model: torch.nn.Module, check: str, run: Callable[[], bool]) -> bool:
    """Whether `model` passes the one-time check named `check`: `run()` the first time,
    remembered for the model's lifetime (a cached prefix that a model ignored or misplaced
    would give other numbers than its full forward)."""
    known = _VERDICTS.setdefault(model, {})
    if check not in known:
        known[check] = bool(run())
    return known[check]


def failed(model: torch.nn.Module, check: str) -> bool:
    """Whether `model` already failed the check named `check` (not run yet: False)."""
    return _VERDICTS.get(model, {}).get(check) is False


def padded_batch(
    sequences: list[list[int]], pad: int, shared: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences as one right-padded batch: (input ids [B, W], attention mask).

    With `shared` > 0 the sequences continue a cached prefix of that many tokens: the ids
    are each sequence's tokens after it, and the mask [B, shared + W] covers the prefix too
    (with causal attention, right padding never changes a real position's state)."""
    width = max(len(s) - shared for s in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for row, sequence in enumerate(sequences):
        own = sequence[shared:]
        input_ids[row, : len(own)] = torch.tensor(own, dtype=torch.long)
        mask[row, shared : shared + len(own)] = 1
    return input_ids, mask


def common_length(a: list[int], b: list[int]) -> int:
    """How many tokens two sequences share from their start."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
