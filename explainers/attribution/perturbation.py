"""Batched forward passes over perturbed prompts: the engine under occlusion, LIME, SHAP and
the faithfulness metrics.

A perturbation keeps some prompt tokens and removes the others. Two ways to remove:

- ``"delete"``: the removed tokens are dropped and the prompt gets shorter, as in ERASER
  (DeYoung et al. 2020) and ferret's defaults. Variants of equal length share a forward.
- ``"replace"``: a stand-in token (pad or EOS, `Objective.baseline_token_id`) takes the
  removed token's place, so every position keeps its index (captum's Occlusion, Lime and
  KernelShap with a token baseline). All variants share one length.

Special tokens (BOS, CLS, SEP) are never removed: they are part of the model's input format,
not of the text being explained.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from explainers.attribution.gradients import CPU_TOKENS_PER_BATCH
from explainers.attribution.objective import Objective
from explainers.base import Progress
from workbench.errors import WorkbenchError

REMOVALS = ("delete", "replace")


def check_removal(removal: str) -> None:
    if removal not in REMOVALS:
        raise WorkbenchError(f"unknown removal {removal!r}; choose {' or '.join(REMOVALS)}")


def removable_positions(obj: Objective) -> torch.Tensor:
    """Indices of the prompt tokens a perturbation may remove (all but special tokens)."""
    return torch.nonzero(~obj.special_mask).flatten()


def evaluate_id_lists(
    obj: Objective,
    id_lists: Sequence[Sequence[int]],
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values and predicted tokens for many prompts given as token ids.

    Prompts of equal length go through the model together; an empty prompt (everything
    removed) becomes a single stand-in token, since a model needs at least one position.
    `progress(prompts done, N)` follows each forward.

    Returns:
        values [N, rows] (float32) and predictions [N, rows]: the arg-max token (causal LM)
        or label (classifier) at each target row, both on the CPU.
    """
    filler = obj.baseline_token_id("pad")
    groups: dict[int, list[int]] = defaultdict(list)
    prompts = [list(ids) or [filler] for ids in id_lists]
    for i, ids in enumerate(prompts):
        groups[len(ids)].append(i)
    values = torch.zeros(len(prompts), obj.n_rows)
    predictions = torch.zeros(len(prompts), obj.n_rows, dtype=torch.long)
    extra = max(obj.target_ids.numel() - 1, 0)
    done = 0
    for length, members in groups.items():
        size = batch_size or max(1, CPU_TOKENS_PER_BATCH // (length + extra))
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            ids = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
            with torch.no_grad():
                logp = obj.row_log_probs(obj.embed(ids))
                values[chunk] = obj.values_from_log_probs(logp).float().cpu()
                predictions[chunk] = logp.argmax(-1).cpu()
            done += len(chunk)
            if progress is not None:
                progress(done, len(prompts))
    return values, predictions


def perturbed_ids(
    obj: Objective, keep: torch.Tensor, removal: str = "delete", baseline: str = "pad"
) -> list[list[int]]:
    """[N, P] keep masks -> the N perturbed prompts (special tokens always kept).

    `baseline` names the stand-in token of ``"replace"`` (pad or eos).
    """
    check_removal(removal)
    keep = keep.bool() | obj.special_mask.unsqueeze(0)
    prompt = obj.prompt_ids
    if removal == "delete":
        return [prompt[k].tolist() for k in keep]
    stand_in = obj.baseline_token_id(baseline)
    return torch.where(keep, prompt.unsqueeze(0), stand_in).tolist()


def evaluate_kept(
    obj: Objective,
    keep: torch.Tensor,
    removal: str = "delete",
    baseline: str = "pad",
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values [N, rows] and predictions [N, rows] with only the kept tokens of each mask."""
    prompts = perturbed_ids(obj, keep, removal, baseline)
    return evaluate_id_lists(obj, prompts, batch_size, progress)
