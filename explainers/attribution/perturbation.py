"""Batched forward passes over perturbed prompts: the engine under occlusion, LIME, SHAP and
the faithfulness metrics.

A perturbation keeps some prompt tokens and removes the others. Two ways to remove:

- ``"delete"``: the removed tokens are dropped and the prompt gets shorter, as in ERASER
  (DeYoung et al. 2020) and ferret's defaults.
- ``"replace"``: a stand-in token (pad or EOS, `Objective.baseline_token_id`) takes the
  removed token's place, so every position keeps its index (captum's Occlusion, Lime and
  KernelShap with a token baseline). All variants share one length.

Special tokens (BOS, CLS, SEP) are never removed: they are part of the model's input format,
not of the text being explained.

How a causal LM's variants go through the model:

- **Prefix reuse.** A variant that agrees with the prompt on its first L tokens (occluding
  position i leaves positions < i alone, under either removal) needs no new work for them:
  the prompt's key/value cache is computed once, and each batch runs only its suffix, from
  the smallest shared prefix in the batch, on the cache cut to that length and expanded to
  the batch. Positions follow from the cache length, which is right for both removals (a
  deleted token's successors move left, exactly as in a forward of the shorter prompt).
  The engine reuses the cache where the plan with it, plus the prompt's own forward, costs
  less than the plan without (random masks share only short prefixes). Models whose cache
  is not a plain `DynamicCache` of full-attention layers (sliding windows, recurrent state,
  legacy tuples) run every variant in full, and so does a model whose cached rows fail a
  one-time check against its full forward (workbench.prefix_cache).
- **Right padding.** Variants of different lengths share a forward, padded at the end: in a
  causal model no real token attends to a later one, so no attention mask is needed, and
  each variant's target rows are read at its own positions.
- **Batches.** Variants are sorted by the suffix they need and cut into batches by a dynamic
  program that weighs a forward's fixed cost against padding, under a memory budget
  (batch_plan.py).
- **No stalls.** On a GPU, inputs go up from pinned memory and a batch's results come back
  while the next batch runs.

Sequence classifiers run prompts of equal length together, in full. A choice among
candidates (`explainers.choice`) runs each variant with the candidates packed after it, on
the prompt's cache from where the variant leaves the prompt.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from explainers.attribution.batch_plan import build_cost, plan
from explainers.attribution.gradients import CPU_TOKENS_PER_BATCH
from explainers.choice import ChoiceObjective
from explainers.explainer import Progress
from explainers.objective import Objective
from workbench.errors import WorkbenchError
from workbench.prefix_cache import PrefixCache, compute_prefix, failed, verdict

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
    reuse_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values and predicted tokens for many prompts given as token ids.

    An empty prompt (everything removed) becomes a single stand-in token, since a model
    needs at least one position. `batch_size` caps the prompts per forward (default: the
    memory budget); `reuse_prefix=False` runs every prompt in full, without the prompt's
    cache (the reference it is compared with). `progress(prompts done, N)` follows each
    forward.

    Returns:
        values [N, rows] (float32) and predictions [N, rows]: the arg-max token (causal LM)
        or label (classifier) at each target row, both on the CPU.
    """
    filler = obj.baseline_token_id("pad")
    prompts = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in id_lists]
    prompts = [ids if len(ids) else np.array([filler]) for ids in prompts]
    values = torch.zeros(len(prompts), obj.n_rows)
    predictions = torch.zeros(len(prompts), obj.n_rows, dtype=torch.long)
    if not prompts:
        return values, predictions
    if obj.lm.kind == "classifier":
        batches = _equal_length_batches(prompts, batch_size)

        def run(chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            return _full(obj, [prompts[i] for i in chunk])

    elif isinstance(obj, ChoiceObjective):
        shared = _shared_prefixes(obj, prompts) if reuse_prefix else [0] * len(prompts)
        prefix = _choice_prefix(obj) if any(shared) else None
        if prefix is None:
            shared = [0] * len(prompts)
        batches = _choice_batches(obj, prompts, shared, batch_size)

        def run(chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            start = min(shared[i] for i in chunk)
            logp = obj.log_probs_for_ids([prompts[i] for i in chunk], filler, prefix, start)
            return obj.values_from_log_probs(logp).float(), logp.argmax(-1)

    else:
        shared = [0] * len(prompts)
        batches, cost = plan(obj, prompts, shared, batch_size)
        prefix = None
        if reuse_prefix:
            # Reuse pays where it saves more than the prompt's own forward costs (random
            # masks share only short prefixes with the prompt).
            common = _shared_prefixes(obj, prompts)
            with_cache, cost_with = plan(obj, prompts, common, batch_size)
            if cost_with + build_cost(obj, _LAST_PROMPT.holds(obj)) < cost:
                prefix = _prompt_prefix(obj)
                if prefix is not None:
                    shared, batches = common, with_cache

        def run(chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            return _suffix_forward(obj, prompts, chunk, shared, prefix, filler)

    done = 0

    def collect(chunk: list[int], out: tuple[torch.Tensor, torch.Tensor]) -> None:
        nonlocal done
        values[chunk] = out[0].cpu()
        predictions[chunk] = out[1].cpu()
        done += len(chunk)
        if progress is not None:
            progress(done, len(prompts))

    pending = None
    for chunk in batches:
        with torch.no_grad():
            out = run(chunk)
        if pending is not None:  # the previous batch's results, while this one runs
            collect(*pending)
        pending = (chunk, out)
    if pending is not None:
        collect(*pending)
    return values, predictions


def perturbed_ids(
    obj: Objective, keep: torch.Tensor, removal: str = "delete", baseline: str = "pad"
) -> list[list[int]]:
    """[N, P] keep masks -> the N perturbed prompts (special tokens always kept).

    `baseline` names the stand-in token of ``"replace"`` (pad or eos).
    """
    return [ids.tolist() for ids in _perturbed_arrays(obj, keep, removal, baseline)]


def _perturbed_arrays(
    obj: Objective, keep: torch.Tensor, removal: str, baseline: str
) -> list[np.ndarray]:
    check_removal(removal)
    keep_np = (keep.bool() | obj.special_mask.unsqueeze(0)).numpy()
    prompt = obj.prompt_ids.numpy()
    if removal == "delete":
        return [prompt[k] for k in keep_np]
    stand_in = obj.baseline_token_id(baseline)
    return list(np.where(keep_np, prompt[None, :], stand_in))


def evaluate_kept(
    obj: Objective,
    keep: torch.Tensor,
    removal: str = "delete",
    baseline: str = "pad",
    batch_size: int | None = None,
    progress: Progress | None = None,
    reuse_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values [N, rows] and predictions [N, rows] with only the kept tokens of each mask."""
    prompts = _perturbed_arrays(obj, keep, removal, baseline)
    return evaluate_id_lists(obj, prompts, batch_size, progress, reuse_prefix)


# -- classifiers: prompts of equal length together ----------------------------------------


def _equal_length_batches(prompts: list[np.ndarray], batch_size: int | None) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(prompts):
        groups[len(ids)].append(i)
    batches = []
    for length, members in groups.items():
        size = batch_size or max(1, CPU_TOKENS_PER_BATCH // length)
        batches += [members[s : s + size] for s in range(0, len(members), size)]
    return batches


def _full(obj: Objective, prompts: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.from_numpy(np.stack(prompts))
    logp = obj.row_log_probs(obj.embed(ids))
    return obj.values_from_log_probs(logp).float(), logp.argmax(-1)


# -- choices: each variant with the candidates packed after it ----------------------------


def _choice_batches(
    obj: ChoiceObjective,
    prompts: list[np.ndarray],
    shared: list[int],
    batch_size: int | None,
) -> list[list[int]]:
    """Variants sorted by where they leave the prompt's cache, cut into batches of about
    CPU_TOKENS_PER_BATCH tokens run (each batch runs from its smallest shared prefix)."""
    order = sorted(range(len(prompts)), key=lambda i: (shared[i], len(prompts[i])))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        trial = current + [i]
        start = min(shared[j] for j in trial)
        width = max(len(prompts[j]) for j in trial) - start + obj.extra_tokens
        full = len(trial) > (batch_size or max(1, CPU_TOKENS_PER_BATCH // max(width, 1)))
        if current and full:
            batches.append(current)
            trial = [i]
        current = trial
    if current:
        batches.append(current)
    return batches


def _choice_prefix(obj: ChoiceObjective) -> PrefixCache | None:
    """The prompt's cache for a choice's variants (checked once per model like the token
    objectives': the cached rows must give the full forward's candidate scores)."""
    model = obj.lm.model
    if failed(model, CHOICE_CHECK):
        return None
    if not _LAST_PROMPT.holds(obj):
        ids = obj.prompt_ids.unsqueeze(0).to(obj.lm.device)
        with torch.no_grad():
            prefix, _ = compute_prefix(model, inputs_embeds=_embed(obj, ids))
        _LAST_PROMPT.keep(obj, prefix)
    prefix = _LAST_PROMPT.prefix
    if prefix is None:
        return None

    def rows_match() -> bool:
        prompt = obj.prompt_ids.numpy()
        with torch.no_grad():
            full = obj.log_probs_for_ids([prompt], 0)
            again = obj.log_probs_for_ids([prompt], 0, prefix, len(prompt) - 1)
        rtol, atol = (1e-3, 1e-3) if obj.lm.dtype == torch.float32 else (5e-2, 1e-1)
        return bool(torch.allclose(again, full, rtol=rtol, atol=atol))

    return prefix if verdict(model, CHOICE_CHECK, rows_match) else None


# -- causal LMs: the prompt's cache, suffixes, right padding ------------------------------


class _LastPrompt:
    """The last objective's prompt cache: shap's Partition explainer calls the engine many
    times for one objective. Dropped with its objective."""

    def __init__(self) -> None:
        self._objective: weakref.ref[Objective] | None = None
        self._prompt: torch.Tensor | None = None
        self.prefix: PrefixCache | None = None

    def holds(self, obj: Objective) -> bool:
        ref = self._objective
        return ref is not None and ref() is obj and self._prompt is obj.prompt_ids

    def keep(self, obj: Objective, prefix: PrefixCache | None) -> None:
        self._objective = weakref.ref(obj, lambda _: self.keep_nothing())
        self._prompt, self.prefix = obj.prompt_ids, prefix

    def keep_nothing(self) -> None:
        self._objective = self._prompt = self.prefix = None


_LAST_PROMPT = _LastPrompt()
ROWS_CHECK = "perturbation: the prompt's rows from its cache"
CHOICE_CHECK = "perturbation: a choice's candidate scores from the prompt's cache"


def _prompt_prefix(obj: Objective) -> PrefixCache | None:
    """The prompt's key/value cache, or None where the model's cache cannot be reused."""
    if not _LAST_PROMPT.holds(obj):
        _LAST_PROMPT.keep(obj, _build_prefix(obj))
    return _LAST_PROMPT.prefix


def _build_prefix(obj: Objective) -> PrefixCache | None:
    model = obj.lm.model
    if failed(model, ROWS_CHECK):
        return None
    length = int(obj.prompt_ids.numel())
    ids = torch.cat([obj.prompt_ids, obj.target_ids[:-1]]).unsqueeze(0)
    with torch.no_grad():
        prefix, out = compute_prefix(model, length, inputs_embeds=_embed(obj, ids))
    if prefix is None:
        return None

    def rows_match() -> bool:
        # The prompt's rows computed from its last token on the cache must equal the rows
        # of the full forward (a model that ignored or misplaced the cache would fail this).
        n_targets = int(obj.target_ids.numel())
        logp = torch.log_softmax(out.logits[:, -n_targets:].float(), dim=-1)
        full = obj.values_from_log_probs(logp).float()
        with torch.no_grad():
            again, _ = _suffix_forward(obj, [obj.prompt_ids.numpy()], [0], [length - 1], prefix, 0)
        # 16-bit forwards of different shapes round differently: a loose bound there.
        rtol, atol = (1e-3, 1e-3) if obj.lm.dtype == torch.float32 else (5e-2, 1e-1)
        return bool(torch.allclose(again, full, rtol=rtol, atol=atol))

    return prefix if verdict(model, ROWS_CHECK, rows_match) else None


def _embed(obj: Objective, ids: torch.Tensor) -> torch.Tensor:
    """Token ids -> input embeddings in the model's dtype (as `Objective.row_log_probs` gets
    them: `Objective.embed`'s float32 round trip changes no value)."""
    return obj.lm.embeddings(ids.to(obj.lm.device)).to(obj.lm.dtype)


def _shared_prefixes(obj: Objective, prompts: list[np.ndarray]) -> list[int]:
    """How many leading tokens each prompt shares with the original (at most its length - 1:
    its last token always runs, since the first target row is read there)."""
    original = obj.prompt_ids.numpy()
    shared = []
    for ids in prompts:
        n = min(len(ids), len(original))
        differ = np.flatnonzero(ids[:n] != original[:n])
        same = int(differ[0]) if len(differ) else n
        shared.append(min(same, len(ids) - 1))
    return shared


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type == "cuda":  # from pinned memory, without waiting for the queued work
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _suffix_forward(
    obj: Objective,
    prompts: list[np.ndarray],
    chunk: list[int],
    shared: list[int],
    prefix: PrefixCache | None,
    filler: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward for the prompts in `chunk`: each prompt's tokens after the batch's
    smallest shared prefix, then the teacher-forced targets, padded at the end.

    Returns values [B, rows] (float32) and predictions [B, rows], on the model's device.
    """
    model, device = obj.lm.model, obj.lm.device
    start = min(shared[i] for i in chunk) if prefix is not None else 0
    lengths = np.array([len(prompts[i]) for i in chunk])
    longest, shortest = int(lengths.max()), int(lengths.min())
    targets = obj.target_ids[:-1].numpy()
    n_targets = int(obj.target_ids.numel())
    width = longest - start + n_targets - 1
    rows = np.full((len(chunk), width), filler, dtype=np.int64)
    for b, i in enumerate(chunk):
        own = len(prompts[i]) - start
        rows[b, :own] = prompts[i][start:]
        rows[b, own : own + n_targets - 1] = targets
    kwargs: dict[str, object] = {"use_cache": False}
    if start > 0 and prefix is not None:
        kwargs = prefix.arguments(len(chunk), start)
    keep = longest - shortest + n_targets  # from the shortest prompt's first row on
    if obj.lm.keeps_logits:
        kwargs["logits_to_keep"] = keep
    else:
        keep = width
    # Row r of a prompt of length n sits at position n - start - 1 + r of its sequence.
    first = lengths - start - 1 - (width - keep)
    index = _to_device(first[:, None] + np.arange(n_targets), device)
    logits = model(inputs_embeds=_embed(obj, _to_device(rows, device)), **kwargs).logits
    batch = torch.arange(len(chunk), device=logits.device).unsqueeze(1)
    logp = torch.log_softmax(logits[batch, index.to(logits.device)].float(), dim=-1)
    return obj.values_from_log_probs(logp).float(), logp.argmax(-1)
