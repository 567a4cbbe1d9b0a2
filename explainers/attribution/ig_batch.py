"""Explanations of a data set: every input of a JSONL file with one method, and for IG with
fixed steps on a causal LM, many inputs' interpolation knots in padded batches.

`IntegratedGradients.attribute` already puts the knots of one input through the model
together. On a GPU a short prompt leaves most of the device idle, so here the knots of
several inputs share one right-padded forward; the backward for target position t serves
every input's row t at once (inputs never interact: each sample's output depends only on its
own embeddings). The numbers are those of the one-input path with the same knots.

Batches are sized to a token budget (`gradients.tokens_per_batch`, at most AUTO_MAX_TOKENS);
on CUDA out-of-memory a batch is split in two and retried, so long prompts slow down instead
of failing.

    >>> exps = explain_dataset(lm, [{"text": "The milk is in the", "target": " fridge"}])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from explainers.attribution.gradients import row_gradients, tokens_per_batch
from explainers.attribution.ig import PathIntegral, completeness_status
from explainers.explainer import Explainer, Progress
from explainers.explanation import DEFAULT_TOLERANCE, Explanation
from explainers.objective import Objective
from explainers.params import int_param
from explainers.registry import get_method
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

DATASET_STEPS = 32  # fixed steps batch across inputs; "auto" explains one input at a time
# The automatic batch budget's ceiling, in padded tokens. Free memory on a large GPU allows
# millions, but a batch that large spans a wide range of lengths (more padding) and runs
# every target position's gradient over all of it: on an H200 (135M shape, 128 inputs)
# 100k-token batches ran 9.15 s, 400k 12.94 s and the memory-sized ones 12.98 s.
AUTO_MAX_TOKENS = 100_000


def explain_dataset(
    lm: LoadedModel | None,
    items: Iterable[dict[str, Any]],
    method: str = "ig",
    *,
    target: str | None = None,
    generate: int | None = None,
    contrast: str | None = None,
    objective: str | None = None,
    aggregate: str = "token",
    llm: Any = None,
    max_batch_tokens: int | None = None,
    progress: Progress | None = None,
    on_done: Callable[[Explanation], None] | None = None,
    **params: Any,
) -> list[Explanation]:
    """Explain every item ({"text", optional "target", "generate", "contrast",
    "candidates"}), in order.

    `target`, `generate` and `contrast` apply to the items that do not set their own;
    `objective` (choice, margin or logprob) to the items with candidates, whose "target"
    is the chosen candidate;
    `aggregate`, `llm` (prompting methods: the LLM that answers) and the method's `params`
    to all. Every item and parameter is checked before the first model call; an item's
    error names its number.

    With `method="ig"` on a causal LM, steps default to DATASET_STEPS and the inputs are
    batched across the data set (`max_batch_tokens` caps a batch); `steps="auto"`, other
    methods and classifiers explain one input at a time.
    """
    explainer = get_method(method)
    requests = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not str(item.get("text") or "").strip():
            raise WorkbenchError(f"data set item {number} has no text")
        # An item that says what to explain (target or generate) says it whole.
        own = item.get("target") is not None or item.get("generate") is not None
        request = {
            "text": item["text"],
            "target": item.get("target") if own else target,
            "generate": item.get("generate") if own else generate,
            "contrast": item["contrast"] if item.get("contrast") is not None else contrast,
        }
        if item.get("candidates") is not None:
            if not isinstance(item["candidates"], list):
                raise WorkbenchError(f"data set item {number}: candidates must be a list")
            request.update(candidates=[str(c) for c in item["candidates"]], objective=objective)
        elif objective not in (None, "logprob"):
            raise WorkbenchError(
                f"data set item {number}: the {objective} objective needs the item's candidates"
            )
        try:
            explainer.check_request(**request, aggregate=aggregate)
        except WorkbenchError as exc:
            raise WorkbenchError(f"data set item {number}: {exc}") from None
        requests.append(request)
    if not requests:
        raise WorkbenchError("the data set has no items")
    # Choices explain one input at a time: each packs its own candidates.
    choices = any("candidates" in r for r in requests)
    batched = method == "ig" and lm is not None and lm.kind == "causal" and not choices
    params = explainer.check_params({"steps": DATASET_STEPS, **params} if batched else params)
    batched = batched and params["steps"] != "auto"
    if max_batch_tokens is not None:
        max_batch_tokens = int_param("max_batch_tokens", max_batch_tokens)
    total = len(requests)
    done = 0

    def finished(exp: Explanation) -> Explanation:
        nonlocal done
        done += 1
        if on_done is not None:
            on_done(exp)
        if progress is not None:
            progress(done, total)
        return exp

    if not batched:
        backend = {} if llm is None else {"llm": llm}
        results = []
        for number, request in enumerate(requests, start=1):
            try:
                exp = explainer.explain(lm, aggregate=aggregate, **request, **backend, **params)
            except WorkbenchError as exc:
                raise WorkbenchError(f"data set item {number}: {exc}") from None
            results.append(finished(exp))
        return results
    return _batched_ig(lm, explainer, requests, params, aggregate, max_batch_tokens, finished)


def _batched_ig(
    lm: LoadedModel,
    explainer: Explainer,
    requests: list[dict[str, Any]],
    params: dict[str, Any],
    aggregate: str,
    max_batch_tokens: int | None,
    finished: Callable[[Explanation], Explanation],
) -> list[Explanation]:
    steps = params["steps"]
    baseline = params.get("baseline", "pad")
    tolerance = params.get("tolerance", DEFAULT_TOLERANCE)
    objectives = []
    for number, request in enumerate(requests, start=1):
        try:
            objectives.append(explainer.resolve_target(lm, **request))
        except WorkbenchError as exc:
            raise WorkbenchError(f"data set item {number}: {exc}") from None
    alphas = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    rows = max(obj.target_ids.numel() for obj in objectives)
    budget = max_batch_tokens or min(AUTO_MAX_TOKENS, tokens_per_batch(objectives[0], rows))
    results: list[Explanation | None] = [None] * len(objectives)
    # Grouped by target count first: a batch takes one backward per target position, so
    # mixing 1-target and 4-target inputs would run 4 backwards over every sample.
    order = sorted(
        range(len(objectives)),
        key=lambda i: (objectives[i].target_ids.numel(), _length(objectives[i])),
    )
    for group in _groups(order, objectives, len(alphas), budget):
        start = time.perf_counter()
        for i, (scores, expected, delta) in zip(
            group, _attribute_group([objectives[i] for i in group], alphas, baseline)
        ):
            exp = Explanation.from_objective(
                explainer,
                objectives[i],
                scores,
                params={
                    "steps": steps,
                    "knots": len(alphas),
                    "rule": "trapezoid",
                    "tolerance": tolerance,
                    "batched_inputs": len(group),
                },
                baseline=baseline,
                expected=expected,
                delta=delta,
            )
            exp.status, exp.warnings = completeness_status(expected, delta, tolerance, steps)
            exp.seconds = (time.perf_counter() - start) / len(group)
            results[i] = finished(exp.aggregate(aggregate))
    return [r for r in results if r is not None]


def _length(obj: Objective) -> int:
    return obj.prompt_ids.numel() + obj.target_ids.numel() - 1


def _groups(order: Sequence[int], objectives: Sequence[Objective], knots: int, budget: int):
    """Consecutive (length-sorted) inputs whose padded knots fit the token budget."""
    group: list[int] = []
    for i in order:
        longest = max([_length(objectives[j]) for j in group] + [_length(objectives[i])])
        if group and (len(group) + 1) * knots * longest > budget:
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def _attribute_group(objs: list[Objective], alphas: torch.Tensor, baseline: str):
    try:
        return _padded_ig(objs, alphas, baseline)
    except torch.cuda.OutOfMemoryError:
        pass  # retried below, outside the handler, so the failed graph's memory is freed
    torch.cuda.empty_cache()
    if len(objs) == 1:
        return [_knots_in_chunks(objs[0], alphas, baseline)]
    half = len(objs) // 2
    return _attribute_group(objs[:half], alphas, baseline) + _attribute_group(
        objs[half:], alphas, baseline
    )


def _knots_in_chunks(obj: Objective, alphas: torch.Tensor, baseline: str, chunk: int = 0):
    """One input that does not fit: its knots go through in smaller and smaller chunks
    (the same knots, so the same numbers)."""
    chunk = chunk or max(1, len(alphas) // 2)
    try:
        path = PathIntegral(obj, obj.input_embeddings, obj.baseline_embeddings(baseline))
        path.evaluate(alphas, chunk)
        return path.result()
    except torch.cuda.OutOfMemoryError:
        pass
    torch.cuda.empty_cache()
    if chunk == 1:
        raise WorkbenchError("out of GPU memory for one interpolation step of one input")
    return _knots_in_chunks(obj, alphas, baseline, chunk // 2)


def _padded_ig(objs: list[Objective], alphas: torch.Tensor, baseline: str):
    lm = objs[0].lm
    device, dtype = lm.device, lm.dtype
    k = len(alphas)
    n = len(objs)
    length = max(_length(o) for o in objs)
    n_targets = max(o.target_ids.numel() for o in objs)
    dim = objs[0].input_embeddings.shape[-1]
    pad_vec = objs[0].embed(torch.tensor([objs[0].baseline_token_id("pad")]))[0]
    a = alphas.float().to(device).view(-1, 1, 1)

    embeds = pad_vec.to(device).expand(n * k, length, dim).clone()
    mask = torch.zeros(n * k, length, dtype=torch.long, device=device)
    diffs = []
    for i, obj in enumerate(objs):
        x, x0 = obj.input_embeddings.to(device), obj.baseline_embeddings(baseline).to(device)
        p, t = obj.prompt_ids.numel(), obj.target_ids.numel()
        rows = slice(i * k, (i + 1) * k)
        embeds[rows, :p] = x0 + a * (x - x0)
        embeds[rows, p : p + t - 1] = obj.embed(obj.target_ids[:-1]).to(device)
        mask[rows, : p + t - 1] = 1
        diffs.append(x - x0)  # [P, D]
    embeds.requires_grad_(True)

    # Positions whose next-token distribution scores a target token, per sample.
    positions = torch.zeros(n * k, n_targets, dtype=torch.long, device=device)
    targets = torch.zeros(n * k, n_targets, dtype=torch.long, device=device)
    contrasts = torch.zeros(n * k, n_targets, dtype=torch.long, device=device)
    contrasted = torch.zeros(n * k, 1, dtype=torch.bool, device=device)
    valid = torch.zeros(n * k, n_targets, dtype=torch.bool, device=device)
    for i, obj in enumerate(objs):
        p, t = obj.prompt_ids.numel(), obj.target_ids.numel()
        rows = slice(i * k, (i + 1) * k)
        positions[rows, :t] = torch.arange(p - 1, p - 1 + t, device=device)
        targets[rows, :t] = obj.target_ids.to(device)
        valid[rows, :t] = True
        if obj.contrast_ids is not None:
            contrasts[rows, :t] = obj.contrast_ids.to(device)
            contrasted[rows] = True

    with torch.enable_grad():
        hidden = lm.model.base_model(inputs_embeds=embeds.to(dtype), attention_mask=mask)
        hidden = hidden.last_hidden_state
        # A model split over GPUs (--device-map) ends on another GPU than it starts on.
        positions = positions.to(hidden.device)
        picked = hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        logits = lm.model.get_output_embeddings()(picked).float()
        targets, contrasts, contrasted, valid = (
            x.to(logits.device) for x in (targets, contrasts, contrasted, valid)
        )
        logp = torch.log_softmax(logits, -1)
        values = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        # With a contrast, row t is log p(t_t) - log p(c_t) at the same position.
        values = values - contrasted * logp.gather(-1, contrasts.unsqueeze(-1)).squeeze(-1)
        values = values * valid
        h = torch.zeros(n * k, n_targets, length, device=device)
        for t, grad in enumerate(row_gradients(values, embeds)):
            for i, obj in enumerate(objs):
                p = obj.prompt_ids.numel()
                rows = slice(i * k, (i + 1) * k)
                h[rows, t, :p] = (grad[rows, :p].float() * diffs[i]).sum(-1)

    out = []
    for i, obj in enumerate(objs):
        p, t = obj.prompt_ids.numel(), obj.target_ids.numel()
        rows = slice(i * k, (i + 1) * k)
        # The one-input path's bookkeeping (trapezoid weights, non-finite knots) applies as is.
        path = PathIntegral(obj, obj.input_embeddings, obj.input_embeddings)
        path.alphas = alphas
        path.f = values[rows, :t].detach().float().cpu()
        path.h = h[rows, :t, :p].cpu()
        out.append(path.result())
    return out
