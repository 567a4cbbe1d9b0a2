"""Probe features: each example's residual stream at its probed position, layer by layer.

Examples run on the model's device in batches padded on the right (with causal attention,
padding never changes a real position's state). Examples that share a long prefix (the
game-state questions: one agent prompt, one short question per entity) run the prefix once
(workbench.prefix_cache) and only their own suffixes in a batch over its keys and values.
The residual stream is read by workbench.anatomy, the one reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from explainers.explainer import Progress
from workbench.anatomy import model_anatomy, residuals, trunk
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prefix_cache import common_length, compute_prefix, padded_batch


class Example(Protocol):
    """What feature extraction reads of an example (a `ProbeExample`)."""

    text: str
    position: int


def token_positions(lm: LoadedModel, examples: Sequence[Example]) -> list[list[int]]:
    return [lm.tokenizer(e.text, add_special_tokens=True)["input_ids"] for e in examples]


def resolve_position(position: int, length: int, number: int) -> int:
    index = position if position >= 0 else length + position
    if not 0 <= index < length:
        raise WorkbenchError(
            f"example {number}: position {position} is outside its {length} tokens"
        )
    return index


def extract_features(
    lm: LoadedModel,
    examples: Sequence[Example],
    layers: list[int] | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Residuals at each example's position: ([N, layers, D] float32, the token read there).
    `progress(examples done, N)` follows each batch.

    Runs on the model's device (CPU or GPU), in batches padded on the right (with causal
    attention, padding never changes a real position's state). Examples that share a long
    prefix (the game-state questions: one agent prompt, one short question per entity) run
    the prefix once and only their own suffixes in a batch over its cached keys/values.
    """
    layer_list = model_anatomy(lm).check_layers("resid", layers)
    ids = token_positions(lm, examples)
    positions = [
        resolve_position(e.position, len(t), i + 1) for i, (e, t) in enumerate(zip(examples, ids))
    ]
    features: np.ndarray | None = None
    batch_size = max(1, int(batch_size))
    shared_runs, plain = _prefix_runs(ids, positions)
    batches = [
        (run[k : k + batch_size], shared)
        for run, shared in shared_runs
        for k in range(0, len(run), batch_size)
    ]
    plain.sort(key=lambda i: len(ids[i]))
    batches += [(plain[k : k + batch_size], 0) for k in range(0, len(plain), batch_size)]
    done = 0
    for batch, shared in batches:
        stacked = None
        if shared and lm.kind == "causal" and len(batch) > 1:
            stacked = _suffix_batch(lm, ids, positions, batch, shared, layer_list)
        if stacked is None:  # no shared prefix, or a model whose cache cannot be reused
            stacked = _plain_batch(lm, ids, positions, batch, layer_list)
        if features is None:
            features = np.zeros((len(examples), len(layer_list), stacked.shape[-1]), np.float32)
        features[batch] = stacked.float().cpu().numpy()
        done += len(batch)
        if progress is not None:
            progress(done, len(examples))
    read = [lm.tokenizer.decode([t[p]]) for t, p in zip(ids, positions)]
    return features, read


MIN_SHARED_PREFIX = 32  # tokens; shorter common prefixes are not worth a cache


def _prefix_runs(
    ids: list[list[int]], positions: list[int]
) -> tuple[list[tuple[list[int], int]], list[int]]:
    """Examples grouped by a shared prefix ([(indices, prefix length)]) and the rest.

    After a lexicographic sort, examples with a common prefix are adjacent; a run continues
    while the next example shares at least half of the run's first example with it. The
    prefix stops before every probed position, so each probed state lies in a suffix.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    runs: list[tuple[list[int], int]] = []
    plain: list[int] = []
    k = 0
    while k < len(order):
        first = ids[order[k]]
        run, shared = [order[k]], positions[order[k]]
        need = max(MIN_SHARED_PREFIX, len(first) // 2)
        j = k + 1
        while j < len(order):
            common = common_length(first, ids[order[j]])
            if common < need:
                break
            shared = min(shared, common, positions[order[j]])
            run.append(order[j])
            j += 1
        if len(run) > 1 and shared >= MIN_SHARED_PREFIX:
            runs.append((run, shared))
        else:
            plain.extend(run)
        k = j
    return runs, plain


def _plain_batch(
    lm: LoadedModel, ids: list[list[int]], positions: list[int], batch: list[int], layers: list[int]
) -> torch.Tensor:
    input_ids, mask = padded_batch([ids[i] for i in batch], lm.tokenizer.pad_token_id or 0)
    states = residuals(lm, layers, input_ids=input_ids, attention_mask=mask)
    at = torch.tensor([positions[i] for i in batch], device=lm.device)
    rows = torch.arange(len(batch), device=lm.device)
    return torch.stack([states[layer][rows, at] for layer in layers], 1)


def _suffix_batch(
    lm: LoadedModel,
    ids: list[list[int]],
    positions: list[int],
    batch: list[int],
    shared: int,
    layers: list[int],
) -> torch.Tensor | None:
    """The batch's suffixes over their shared prefix's cache (None: the model's cache
    cannot be reused)."""
    prefix_ids = torch.tensor(ids[batch[0]][:shared], device=lm.device).unsqueeze(0)
    with torch.no_grad():
        prefix, _ = compute_prefix(trunk(lm), input_ids=prefix_ids)
    if prefix is None:
        return None
    pad = lm.tokenizer.pad_token_id or 0
    input_ids, mask = padded_batch([ids[i] for i in batch], pad, shared)
    cache = prefix.for_batch(len(batch))
    states = residuals(lm, layers, input_ids=input_ids, attention_mask=mask, cache=cache)
    at = torch.tensor([positions[i] - shared for i in batch], device=lm.device)
    rows = torch.arange(len(batch), device=lm.device)
    return torch.stack([states[layer][rows, at] for layer in layers], 1)
