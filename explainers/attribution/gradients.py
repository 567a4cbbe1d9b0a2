"""Batched per-row gradients: the engine under every gradient attribution method.

Many prompt-embedding variants (IG's interpolation knots, SmoothGrad/GradientSHAP's noisy
samples) go through the model together in one forward pass; every target row's gradient
is then taken from that same forward, one backward per row. Gradients land in float32
(the leaf embeddings are float32 even when the model runs in bf16), and each is reduced
to a per-token score at once so memory stays at [variants, rows, tokens].
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from explainers.attribution.objective import Objective
from explainers.base import Progress

# reduce(grad [B, P, D], embeds [B, P, D]) -> [B, P]
Reduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CPU_TOKENS_PER_BATCH = 4096


def tokens_per_batch(obj: Objective) -> int:
    """How many (variant x position) tokens one forward may hold; bounded by free GPU memory."""
    if obj.lm.device.type != "cuda":
        return CPU_TOKENS_PER_BATCH
    free, _ = torch.cuda.mem_get_info(obj.lm.device)
    config = obj.lm.model.config
    hidden = getattr(config, "hidden_size", 1024)
    layers = getattr(config, "num_hidden_layers", 12)
    # Activations kept for backward: roughly 24 values per hidden unit per layer per token.
    per_token = 24 * hidden * layers * torch.finfo(obj.lm.dtype).bits // 8
    return max(256, int(0.5 * free / per_token))


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
    n, length = embeds.shape[0], embeds.shape[1] + max(obj.target_ids.numel() - 1, 0)
    if batch_size is None:
        batch_size = max(1, tokens_per_batch(obj) // max(length, 1))
    values, reduced = [], []
    for start in range(0, n, batch_size):
        chunk = embeds[start : start + batch_size].to(obj.lm.device).detach().requires_grad_(True)
        if context is None:
            extra = chunk.detach()
        else:
            extra = context[start : start + batch_size].to(obj.lm.device)
        with torch.enable_grad():
            out = obj.forward_embeddings(chunk)  # [B, rows]
            rows = out.shape[1]
            per_row = []
            for r in range(rows):
                (grad,) = torch.autograd.grad(out[:, r].sum(), chunk, retain_graph=r < rows - 1)
                per_row.append(reduce(grad.float(), extra))
        values.append(out.detach().float().cpu())
        reduced.append(torch.stack(per_row, dim=1).cpu())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return torch.cat(values), torch.cat(reduced)
