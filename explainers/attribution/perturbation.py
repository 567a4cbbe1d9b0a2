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
  one-time check against its full forward.
- **Right padding.** Variants of different lengths share a forward, padded at the end: in a
  causal model no real token attends to a later one, so no attention mask is needed, and
  each variant's target rows are read at its own positions.
- **Batches.** Variants are sorted by the suffix they need and cut into batches by a dynamic
  program that weighs a forward's fixed cost (Python and kernel launches) against padding,
  under a memory budget: free GPU memory on CUDA (a no-grad forward keeps no activations,
  only the key/value cache and the target rows' logits), 4096 positions on a CPU.
- **No stalls.** On a GPU, inputs go up from pinned memory and a batch's results come back
  while the next batch runs.

Sequence classifiers run prompts of equal length together, in full.
"""

from __future__ import annotations

import inspect
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from explainers.attribution.gradients import CPU_TOKENS_PER_BATCH
from explainers.attribution.objective import Objective
from explainers.base import Progress
from workbench.errors import WorkbenchError

REMOVALS = ("delete", "replace")

# Reuse the prompt's key/value cache for the prefix a variant shares with it. False runs
# every variant in full (the reference the tests and benchmarks/perturb_bench.py compare).
REUSE_PREFIX = True

MAX_VARIANTS_PER_FORWARD = 4096

# What one more forward costs a GPU beyond its launches, in positions of work: the host's
# preparation between batches and the small matmuls' lower efficiency.
GPU_BATCH_FIXED = 1024

# What the engine ran since the last reset (benchmarks read it): forwards, and positions
# computed (padding included, cached prefixes not).
COUNTERS = {"forwards": 0, "positions": 0}


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
    reuse_prefix: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values and predicted tokens for many prompts given as token ids.

    An empty prompt (everything removed) becomes a single stand-in token, since a model
    needs at least one position. `batch_size` caps the prompts per forward (default: the
    memory budget); `reuse_prefix` switches the prompt's cache reuse (default
    `REUSE_PREFIX`). `progress(prompts done, N)` follows each forward.

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

    else:
        reuse = REUSE_PREFIX if reuse_prefix is None else reuse_prefix
        shared = [0] * len(prompts)
        batches, cost = _plan(obj, prompts, shared, batch_size)
        prefix = None
        if reuse:
            # Reuse pays where it saves more than the prompt's own forward costs (random
            # masks share only short prefixes with the prompt).
            common = _shared_prefixes(obj, prompts)
            with_cache, cost_with = _plan(obj, prompts, common, batch_size)
            if cost_with + _build_cost(obj) < cost:
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
    reuse_prefix: bool | None = None,
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
    COUNTERS["forwards"] += 1
    COUNTERS["positions"] += ids.numel()
    logp = obj.row_log_probs(obj.embed(ids))
    return obj.values_from_log_probs(logp).float(), logp.argmax(-1)


# -- causal LMs: the prompt's cache, suffixes, right padding ------------------------------


@dataclass
class _Prefix:
    """The prompt's keys and values, layer by layer ([1, heads, P, head dim] each)."""

    argument: str  # the forward's cache keyword: "cache" (transformers 5.2x) or the older name
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    def cut(self, length: int, batch: int):
        """A fresh cache of the first `length` positions for `batch` sequences."""
        from transformers import DynamicCache

        return DynamicCache(
            ddp_cache_data=[
                (
                    k[:, :, :length].expand(batch, -1, -1, -1),
                    v[:, :, :length].expand(batch, -1, -1, -1),
                )
                for k, v in self.layers
            ]
        )


# One prompt's cache at a time (shap's Partition explainer calls the engine many times for
# one objective), dropped with its objective; and which models passed the cache check.
_MEMO: dict[str, object] = {}
_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _prompt_prefix(obj: Objective) -> _Prefix | None:
    """The prompt's key/value cache, or None where the model's cache cannot be reused."""
    if _memo_holds(obj):
        return _MEMO["prefix"]  # type: ignore[return-value]
    prefix = _build_prefix(obj)
    _MEMO.clear()
    _MEMO.update(objective=weakref.ref(obj, lambda _: _MEMO.clear()), prompt=obj.prompt_ids)
    _MEMO["prefix"] = prefix
    return prefix


def _memo_holds(obj: Objective) -> bool:
    ref = _MEMO.get("objective")
    return ref is not None and ref() is obj and _MEMO.get("prompt") is obj.prompt_ids  # type: ignore[operator]


def _build_prefix(obj: Objective) -> _Prefix | None:
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None
    model = obj.lm.model
    if _CHECKED.get(model) is False:
        return None
    parameters = inspect.signature(model.forward).parameters
    argument = next((a for a in ("cache", "past_key_values") if a in parameters), None)
    if argument is None:
        return None
    length = int(obj.prompt_ids.numel())
    ids = torch.cat([obj.prompt_ids, obj.target_ids[:-1]]).unsqueeze(0)
    COUNTERS["forwards"] += 1
    COUNTERS["positions"] += ids.numel()
    with torch.no_grad():
        out = model(inputs_embeds=_embed(obj, ids), use_cache=True)
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not layers:
        return None
    if any(type(layer) is not DynamicLayer or layer.keys.dim() != 4 for layer in layers):
        return None
    if any(layer.keys.shape[-2] != ids.shape[1] for layer in layers):
        return None
    prefix = _Prefix(
        argument, [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in layers]
    )
    if model not in _CHECKED:
        # Once per model: the prompt's rows computed from its last token on the cache must
        # equal the rows of the full forward (a model that ignored or misplaced the cache
        # would fail this).
        n_targets = int(obj.target_ids.numel())
        logp = torch.log_softmax(out.logits[:, -n_targets:].float(), dim=-1)
        full = obj.values_from_log_probs(logp).float()
        with torch.no_grad():
            again, _ = _suffix_forward(obj, [obj.prompt_ids.numpy()], [0], [length - 1], prefix, 0)
        # 16-bit forwards of different shapes round differently: a loose bound there.
        rtol, atol = (1e-3, 1e-3) if obj.lm.dtype == torch.float32 else (5e-2, 1e-1)
        _CHECKED[model] = bool(torch.allclose(again, full, rtol=rtol, atol=atol))
    return prefix if _CHECKED[model] else None


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
    prefix: _Prefix | None,
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
    COUNTERS["forwards"] += 1
    COUNTERS["positions"] += rows.size
    kwargs: dict[str, object] = {"use_cache": False}
    if start > 0 and prefix is not None:
        kwargs = {prefix.argument: prefix.cut(start, len(chunk)), "use_cache": True}
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


# A model's sizes, read once (walking its parameters costs a millisecond per call).
_SIZES: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


# -- batch planning -----------------------------------------------------------------------


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


def _plan(
    obj: Objective, prompts: list[np.ndarray], shared: list[int], batch_size: int | None
) -> tuple[list[list[int]], float]:
    """Batches of prompt indices, and their cost in positions. Prompts are sorted by the
    suffix each needs (length minus shared prefix), and a dynamic program cuts that order
    where the total cost is least: a forward's work is its padded positions plus the LM
    head's rows, its cost is `_forward_cost`. A batch must fit the memory budget (GPU) or
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
        cost = _forward_cost(count * (positions + head * rows).astype(np.float64), sizes, cuda)
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


def _forward_cost(work, sizes: dict[str, int], cuda: bool):
    """A forward's cost in positions, given its work (padded positions plus the LM head's
    rows): on a CPU the work plus a fixed cost (Python); on a GPU the longer of its kernel
    launches, which the GPU's work hides, and its work plus `GPU_BATCH_FIXED`."""
    overhead = _overhead_positions(sizes, cuda)
    if cuda:
        return np.maximum(overhead, work + GPU_BATCH_FIXED)
    return overhead + work


def _build_cost(obj: Objective) -> float:
    """What computing the prompt's cache costs (nothing once it is there)."""
    if _memo_holds(obj):
        return 0.0
    sizes = _model_sizes(obj)
    work = obj.prompt_ids.numel() + obj.target_ids.numel() * (
        1 + sizes["vocab"] * sizes["hidden"] / sizes["params"]
    )
    return float(_forward_cost(float(work), sizes, obj.lm.device.type == "cuda"))


def _overhead_positions(sizes: dict[str, int], cuda: bool) -> float:
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
