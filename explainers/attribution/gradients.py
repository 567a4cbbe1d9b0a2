"""Batched per-row gradients: the engine under every gradient attribution method.

Many prompt-embedding variants (IG's interpolation knots, SmoothGrad/GradientSHAP's noisy
samples) go through the model together in one forward pass; every target row's gradient
is then taken from that same forward, all rows in one batched backward (`row_gradients`).
Gradients land in float32
(the leaf embeddings are float32 even when the model runs in bf16), and each is reduced
to a per-token score at once so memory stays at [variants, rows, tokens].
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from explainers.explainer import Progress
from explainers.objective import Objective

# reduce(grad [B, P, D], embeds [B, P, D]) -> [B, P]
Reduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CPU_TOKENS_PER_BATCH = 4096


# One backward for every target row at once (autograd's is_grads_batched, a vmap over the
# rows' output gradients): T small passes become one pass of T-times larger matmuls, which
# a GPU runs near its peak where T separate passes leave it waiting on kernel launches.
# False: one backward per row (the reference the tests compare with).
BATCHED_BACKWARD = True
# ...but only for batches of at most this many (token x hidden) input elements. Measured on
# an H200 (bf16, 32 knots, T targets): SmolLM2-135M shape, P256/T8 (4.9M elements) batched
# 0.226 s vs 0.388 s one row at a time; 1.1B, P256/T8 (17M) 0.491 vs 0.496 s; 1.1B,
# P512/T16 (35M) 2.04 vs 1.86 s: once each row's pass fills the GPU, batching T of them only
# adds memory traffic.
BATCHED_BACKWARD_MAX_ELEMENTS = 1 << 24


def tokens_per_batch(obj: Objective, rows: int = 1) -> int:
    """How many (variant x position) tokens one forward may hold; bounded by free GPU memory.

    `rows` is the number of target rows whose gradients one batched backward carries.
    """
    batched_rows = rows if BATCHED_BACKWARD and rows > 1 else 1
    if obj.lm.device.type != "cuda":
        # A batched backward holds every row's gradients at once; a CPU is no faster with
        # larger batches, so it keeps the memory of one row's.
        return max(256, CPU_TOKENS_PER_BATCH // batched_rows)
    free, _ = torch.cuda.mem_get_info(obj.lm.device)
    config = obj.lm.model.config
    hidden = getattr(config, "hidden_size", 1024)
    layers = getattr(config, "num_hidden_layers", 12)
    inner = getattr(config, "intermediate_size", 4 * hidden)
    width = torch.finfo(obj.lm.dtype).bits // 8
    # Activations kept for backward: roughly 24 values per hidden unit per layer per token.
    per_token = 24 * hidden * layers * width
    tokens = int(0.5 * free / per_token)
    if batched_rows > 1:
        # One layer's gradients at a time, for every row, and the float32 input gradients;
        # counted only where a full batch stays small enough to be batched (`row_gradients`).
        extra = rows * ((8 * hidden + 3 * inner) * width + 4 * hidden)
        batched = int(0.5 * free / (per_token + extra))
        if batched * hidden <= BATCHED_BACKWARD_MAX_ELEMENTS:
            tokens = batched
    return max(256, tokens)


def row_gradients(values: torch.Tensor, leaf: torch.Tensor) -> list[torch.Tensor]:
    """d values[:, r].sum() / d leaf for each row r of values [B, rows]: `rows` tensors
    shaped like `leaf`. Samples never interact, so row r's gradient at sample b is that
    sample's own. Frees the graph.

    One batched backward for a small batch (see BATCHED_BACKWARD), else one per row; an
    operation that autograd cannot batch makes it fall back to one per row too, with the
    same numbers.
    """
    rows = values.shape[1]
    if BATCHED_BACKWARD and rows > 1 and leaf.numel() <= BATCHED_BACKWARD_MAX_ELEMENTS:
        eye = torch.eye(rows, dtype=values.dtype, device=values.device)
        try:
            with warnings.catch_warnings():
                # An op without a batching rule runs row by row inside vmap: still right.
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                (grads,) = torch.autograd.grad(
                    values,
                    leaf,
                    eye.unsqueeze(1).expand(rows, values.shape[0], rows),
                    retain_graph=True,
                    is_grads_batched=True,
                )
            return list(grads.unbind(0))
        except (RuntimeError, NotImplementedError) as error:
            if not cannot_batch(error):
                raise  # out of memory or a real failure: not a reason to go row by row
            # the graph was retained: the loop below can still use it
    return [
        torch.autograd.grad(values[:, r].sum(), leaf, retain_graph=r < rows - 1)[0]
        for r in range(rows)
    ]


# What torch says when vmap (which batches the backward) has no rule for an operation:
# "Batching rule not implemented for aten::...", "vmap: ... is not supported", ...
_CANNOT_BATCH = ("batching rule", "vmap")


def cannot_batch(error: Exception) -> bool:
    """Whether `error` is autograd refusing to batch the backward (a vmap limitation),
    rather than out of memory or a bug: only the former falls back to one row at a time."""
    if isinstance(error, NotImplementedError):
        return True
    return any(marker in str(error).lower() for marker in _CANNOT_BATCH)


def batched_row_gradients(
    obj: Objective,
    embeds: torch.Tensor,
    reduce: Reduction,
    batch_size: int | None = None,
    context: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values and reduced gradients for many prompt-embedding variants.

    Args:
        embeds: [K, P, D] float32 prompt embeddings.
        reduce: turns a [B, P, D] gradient (and the embeddings it was taken at) into [B, P].
        batch_size: variants per forward; default from `tokens_per_batch`.
        context: [K, P, D], passed to `reduce` in place of the embeddings, for methods whose
            per-variant multiplier is not the point itself (GradientSHAP's x - baseline_k).
        progress: called with (variants done, K) after each batch.

    Returns:
        values [K, rows] and reduced gradients [K, rows, P], both float32 on the CPU.
    """
    n, length = embeds.shape[0], embeds.shape[1] + obj.extra_tokens
    if batch_size is None:
        batch_size = max(1, tokens_per_batch(obj, obj.n_rows) // max(length, 1))
    values, reduced = [], []
    for start in range(0, n, batch_size):
        chunk = embeds[start : start + batch_size].to(obj.lm.device).detach().requires_grad_(True)
        if context is None:
            extra = chunk.detach()
        else:
            extra = context[start : start + batch_size].to(obj.lm.device)
        with torch.enable_grad():
            out = obj.forward_embeddings(chunk)  # [B, rows]
            per_row = [reduce(grad.float(), extra) for grad in row_gradients(out, chunk)]
        values.append(out.detach().float().cpu())
        reduced.append(torch.stack(per_row, dim=1).cpu())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return torch.cat(values), torch.cat(reduced)
