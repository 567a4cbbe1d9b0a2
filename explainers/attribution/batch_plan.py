"""Batch planning for the perturbation engine: which perturbed prompts share a forward.

Prompts are sorted by the suffix each needs and cut into batches by a dynamic program that
weighs a forward's fixed cost (Python and kernel launches) against padding, under a memory
budget: free GPU memory on CUDA (a no-grad forward keeps no activations, only the key/value
cache and the target rows' logits), 4096 positions on a CPU. Costs are in positions of
matmul work.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from explainers.attribution.gradients import CPU_TOKENS_PER_BATCH
from explainers.objective import Objective

MAX_VARIANTS_PER_FORWARD = 4096

# What one more forward costs a GPU beyond its launches, in positions of work: the host's
# preparation between batches and the small matmuls' lower efficiency.
GPU_BATCH_FIXED = 1024

# A model's sizes, read once (walking its parameters costs a millisecond per call).
_SIZES: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


def _model_sizes(obj: Objective) -> dict[str, int]:
    sizes = _SIZES.get(obj.lm.model)
    if sizes is None:
        sizes = _SIZES[obj.lm.model] = _read_sizes(obj.lm.model)
    return sizes


def _read_sizes(model: torch.nn.Module) -> dict[str, int]:
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(config, "hidden_size", 1024))
    heads = int(getattr(config, "num_attention_heads", 16))
    return {
        "hidden": hidden,
        "layers": int(getattr(config, "num_hidden_layers", 12)),
        "inner": int(getattr(config, "intermediate_size", None) or 4 * hidden),
        "kv": int(getattr(config, "num_key_value_heads", None) or heads)
        * int(getattr(config, "head_dim", None) or hidden // heads),
        "vocab": int(getattr(config, "vocab_size", 32000)),
        "params": _position_params(model),
    }


def _position_params(model: torch.nn.Module) -> int:
    """Parameters every prompt position multiplies by: all but the input embedding table
    (a lookup) and the LM head (run for the target rows only)."""
    skip = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        skip.add(id(head.weight))
    return max(1, sum(p.numel() for p in model.parameters() if id(p) not in skip))


def plan(
    obj: Objective, prompts: list[np.ndarray], shared: list[int], batch_size: int | None
) -> tuple[list[list[int]], float]:
    """Batches of prompt indices, and their cost in positions. Prompts are sorted by the
    suffix each needs (length minus shared prefix), and a dynamic program cuts that order
    where the total cost is least: a forward's work is its padded positions plus the LM
    head's rows, its cost is `forward_cost`. A batch must fit the memory budget (GPU) or
    4096 positions (CPU) or `batch_size` prompts."""
    n_rows = int(obj.target_ids.numel())
    lengths = np.array([len(p) for p in prompts])
    starts = np.array(shared)
    order = np.lexsort((starts, lengths, lengths - starts))
    lengths, starts = lengths[order], starts[order]
    sizes = _model_sizes(obj)
    cuda = obj.lm.device.type == "cuda"
    head = sizes["vocab"] * sizes["hidden"] / sizes["params"]
    keeps_logits = obj.lm.keeps_logits
    budget = None
    if batch_size is not None:
        most = batch_size
    else:
        most = MAX_VARIANTS_PER_FORWARD
        if cuda:
            free, _ = torch.cuda.mem_get_info(obj.lm.device)
            budget = 0.5 * free
    width = torch.finfo(obj.lm.dtype).bits // 8
    kv = 2 * sizes["layers"] * sizes["kv"] * width  # bytes per cached position
    # One layer's transient activations per position, and the float32 input embeddings.
    act = (8 * sizes["hidden"] + 4 * sizes["inner"]) * width + 8 * sizes["hidden"]
    logit = sizes["vocab"] * width  # one kept logit row
    picked = n_rows * sizes["vocab"] * 12  # the target rows, gathered and in float32

    total = len(order)
    most = min(most, total)
    count = np.arange(1, most + 1)  # a run of `count` prompts ending at sorted index j
    # Row j of these windows holds the values of the prompts j - most + 1 .. j, latest first.
    windows = [
        sliding_window_view(np.concatenate([np.zeros(most - 1, np.int64), a]), most)[:, ::-1]
        for a in (lengths, starts)
    ]
    best = np.full(total + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(total + 1, dtype=np.int64)
    block = max(1, 2**20 // most)
    for first in range(0, total, block):
        ends = np.arange(first, min(total, first + block))
        run_lengths, run_starts = windows[0][ends], windows[1][ends]
        longest = np.maximum.accumulate(run_lengths, axis=1)
        shortest = np.minimum.accumulate(run_lengths, axis=1)
        start = np.minimum.accumulate(run_starts, axis=1)
        positions = longest - start + n_rows - 1
        # The LM head runs on the rows from the shortest prompt's first target row to the
        # end (padding spreads them), each row `head` positions' worth of work.
        rows = (longest - shortest + n_rows) if keeps_logits else positions
        cost = forward_cost(count * (positions + head * rows).astype(np.float64), sizes, cuda)
        if budget is not None:
            memory = count * (
                (start + positions) * kv
                + positions * act
                + (longest - shortest + n_rows) * logit
                + picked
            )
            cost[:, 1:][memory[:, 1:] > budget] = np.inf  # one prompt always runs
        elif batch_size is None:
            cost[:, 1:][(count * positions)[:, 1:] > CPU_TOKENS_PER_BATCH] = np.inf
        for row, j in enumerate(ends.tolist()):
            m = min(most, j + 1)
            options = best[j + 1 - count[:m]] + cost[row, :m]
            k = int(np.argmin(options))
            best[j + 1], cut[j + 1] = options[k], j - k
    batches = []
    j = total
    while j > 0:
        batches.append(order[cut[j] : j].tolist())
        j = int(cut[j])
    return batches[::-1], float(best[total])


def forward_cost(work, sizes: dict[str, int], cuda: bool):
    """A forward's cost in positions, given its work (padded positions plus the LM head's
    rows): on a CPU the work plus a fixed cost (Python); on a GPU the longer of its kernel
    launches, which the GPU's work hides, and its work plus `GPU_BATCH_FIXED`."""
    overhead = overhead_positions(sizes, cuda)
    if cuda:
        return np.maximum(overhead, work + GPU_BATCH_FIXED)
    return overhead + work


def build_cost(obj: Objective, cached: bool) -> float:
    """What computing the prompt's cache costs (nothing once it is `cached`)."""
    if cached:
        return 0.0
    sizes = _model_sizes(obj)
    work = obj.prompt_ids.numel() + obj.target_ids.numel() * (
        1 + sizes["vocab"] * sizes["hidden"] / sizes["params"]
    )
    return float(forward_cost(float(work), sizes, obj.lm.device.type == "cuda"))


def overhead_positions(sizes: dict[str, int], cuda: bool) -> float:
    """A forward's fixed cost in positions of matmul work: on a GPU about 1 ms of Python
    and kernel launches per layer at 400 TFLOP/s; on a CPU about 2 ms plus 0.1 ms per layer
    at 50 GFLOP/s.

    The GPU figure is measured (H200, P256/T8, occlusion): with 0.3 ms the planner chose
    the prompt's cache for the 30-layer 135M shape, 4 forwards that took 0.216 s against
    0.116 s for one forward without it (about 1.7 ms per layer and forward of cache
    handling and launches); on the 16-layer 1.1B shape the cache still pays (0.263 s vs
    0.332 s) at 1 ms."""
    if cuda:
        seconds, flops = sizes["layers"] * 1e-3, 4e14
    else:
        seconds, flops = 2e-3 + sizes["layers"] * 1e-4, 5e10
    return float(np.clip(seconds * flops / (2 * sizes["params"]), 1, 1e7))
