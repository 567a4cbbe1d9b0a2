"""Shapley values over groups of prompt tokens (Shapley 1953; for features of a model,
Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions").

The players are a few groups of tokens: a prompt's lines, or an agent prompt's segments and
tips (`agents.explain_step`). A coalition S keeps its groups' tokens and deletes the others
(the prompt without those sections, as tip ablation re-renders it without a tip); v(S) is
the objective on what is left, and tokens in no group (an agent prompt's frame: the
template's own text, the chat scaffold) always stay. Player i's value is its average
marginal contribution v(S + i) - v(S) over orderings of the players, so the values add up
to v(all) - v(none) exactly: the method is complete by construction, sampled or not.

- **Exact** where 2^n coalitions fit `max_evals` (six players: 64 forwards).
- **Sampled** otherwise: random orderings in antithetic pairs (each ordering and its
  reverse), every ordering's marginals summing to v(all) - v(none); each value comes with
  its standard error over the pairs.

Deleting a group changes nothing before its first token, so each coalition runs only from
its first deleted token on, over the prompt's key/value cache, and deleted tokens cost
nothing (the perturbation engine, perturbation.py).

    >>> exp = explain(lm, prompt, "segment_shapley", candidates=commands)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.perturbation import evaluate_kept
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.params import Int
from explainers.registry import register
from workbench.errors import WorkbenchError

DEFAULT_MAX_EVALS = 64
MAX_PAIRS = 500  # sampled orderings stop here even where coalitions repeat


def _prefix_coalitions(order: np.ndarray, n: int) -> list[tuple[bool, ...]]:
    """The coalitions an ordering passes through (its first k players, 0 < k < n)."""
    kept = np.zeros(n, dtype=bool)
    out = []
    for player in order[:-1]:
        kept[player] = True
        out.append(tuple(bool(k) for k in kept))
    return out


@dataclass
class GroupShapley:
    """Each group's Shapley value, its standard error (0 where exact) and the coalition
    values it came from."""

    values: np.ndarray  # [n]
    stderr: np.ndarray  # [n]
    exact: bool
    full: float  # v(all groups)
    empty: float  # v(no group)
    evaluations: int  # coalitions run through the model

    @property
    def gap(self) -> float:
        """sum(values) - (v(all) - v(none)): zero up to rounding (efficiency)."""
        return float(self.values.sum() - (self.full - self.empty))


def group_shapley(
    obj: Objective,
    groups: list[np.ndarray],
    *,
    max_evals: int = DEFAULT_MAX_EVALS,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> GroupShapley:
    """Shapley values of `groups` (arrays of prompt positions, disjoint) for `obj`'s first
    row: exact where 2^n <= max_evals, else sampled orderings within about `max_evals`
    coalitions."""
    n = len(groups)
    if n == 0:
        raise WorkbenchError("there is no group of tokens to attribute to")
    if obj.n_rows != 1:
        raise WorkbenchError("group Shapley values explain one row; give a one-token target")
    exact = 2**n <= max_evals
    if exact:
        coalitions = np.array(list(product([False, True], repeat=n)), dtype=bool)
    else:
        # Orderings in antithetic pairs until the next pair would need more coalitions
        # than the budget (orderings share coalitions, so few players allow many pairs).
        rng = np.random.default_rng(seed)
        keys = {(False,) * n, (True,) * n}
        orders: list[np.ndarray] = []
        while len(orders) < 2 * MAX_PAIRS:
            first = rng.permutation(n)
            pair = (first, first[::-1])
            added = {key for order in pair for key in _prefix_coalitions(order, n)} - keys
            if orders and len(keys) + len(added) > max_evals:
                break
            keys |= added
            orders.extend(pair)
        coalitions = np.array(sorted(keys), dtype=bool)
    values = coalition_values(obj, groups, coalitions, batch_size=batch_size, progress=progress)
    value_of = {tuple(c): float(v) for c, v in zip(coalitions, values)}
    full, empty = value_of[(True,) * n], value_of[(False,) * n]
    if exact:
        shapley = np.zeros(n)
        for c, v in value_of.items():
            size = sum(c)
            for i in range(n):
                if c[i]:
                    continue
                with_i = c[:i] + (True,) + c[i + 1 :]
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                shapley[i] += weight * (value_of[with_i] - v)
        return GroupShapley(shapley, np.zeros(n), True, full, empty, len(coalitions))
    marginals = np.zeros((len(orders), n))
    for k, order in enumerate(orders):
        kept = np.zeros(n, dtype=bool)
        before = empty
        for player in order:
            kept[player] = True
            after = value_of[tuple(kept)]
            marginals[k, player] = after - before
            before = after
    # Antithetic pairs are the independent samples.
    paired = (marginals[0::2] + marginals[1::2]) / 2
    stderr = paired.std(axis=0, ddof=1) / math.sqrt(len(paired)) if len(paired) > 1 else None
    if stderr is None:
        stderr = np.full(n, np.nan)
    return GroupShapley(paired.mean(axis=0), stderr, False, full, empty, len(coalitions))


def coalition_values(
    obj: Objective,
    groups: list[np.ndarray],
    coalitions: np.ndarray,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
    reuse_prefix: bool = True,
) -> np.ndarray:
    """v(S) for each coalition ([M, n] bool): the objective's first row on the prompt
    without the tokens of the groups outside S (perturbation.py runs them, each from where
    it leaves the prompt, on the prompt's cache)."""
    keep = torch.ones((len(coalitions), int(obj.prompt_ids.numel())), dtype=torch.bool)
    for m, coalition in enumerate(coalitions):
        for group, kept in zip(groups, coalition):
            if not kept and len(group):
                keep[m, torch.from_numpy(group)] = False
    values, _ = evaluate_kept(
        obj, keep, "delete", batch_size=batch_size, progress=progress, reuse_prefix=reuse_prefix
    )
    return values[:, 0].double().numpy()


def line_groups(obj: Objective) -> list[np.ndarray]:
    """The prompt's lines as groups: each token goes to the line its text starts on."""
    tok = obj.lm.tokenizer
    if not getattr(tok, "is_fast", False):
        raise WorkbenchError("line groups need a fast tokenizer (character offsets)")
    enc = tok(obj.text, add_special_tokens=True, return_offsets_mapping=True)
    if enc["input_ids"] != obj.prompt_ids.tolist():
        raise WorkbenchError("the tokenizer's offsets do not line up with the prompt")
    special = obj.special_mask.numpy()
    line_of = [obj.text.count("\n", 0, start) for start, _ in enc["offset_mapping"]]
    lines: dict[int, list[int]] = defaultdict(list)
    for position, line in enumerate(line_of):
        if not special[position]:
            lines[line].append(position)
    return [np.array(p) for _, p in sorted(lines.items())]


def spread(result: GroupShapley, groups: list[np.ndarray], length: int) -> np.ndarray:
    """[1, P] token scores: each group's value shared equally by its tokens (token scores
    summed over a group give its value back)."""
    scores = np.zeros((1, length))
    for value, group in zip(result.values, groups):
        if len(group):
            scores[0, group] = value / len(group)
    return scores


def shapley_attribution(
    obj: Objective, groups: list[np.ndarray], params: dict[str, Any], **kwargs: Any
) -> Attribution:
    """The Attribution of group Shapley values: token scores, completeness and the error
    bars, for any grouping (`SegmentShapley` and agent steps)."""
    result = group_shapley(obj, groups, **kwargs)
    return Attribution(
        spread(result, groups, int(obj.prompt_ids.numel())),
        params={**params, "exact": result.exact, "evaluations": result.evaluations},
        expected=[result.full - result.empty],
        delta=[result.gap],
        extras={
            "group_values": result.values.tolist(),
            "group_stderr": result.stderr.tolist(),
            "value_all": result.full,
            "value_none": result.empty,
        },
    )


@register
class SegmentShapley(AttributionExplainer):
    name = "segment_shapley"
    summary = "Shapley values of the prompt's lines (an agent step: its segments and tips)"
    reports_progress = True
    param_checks = {"max_evals": Int(min=2)}

    def attribute(
        self,
        obj: Objective,
        max_evals: int = DEFAULT_MAX_EVALS,
        seed: int = 0,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        groups = line_groups(obj)
        return shapley_attribution(
            obj,
            groups,
            {"max_evals": max_evals, "seed": seed, "unit": "line", "players": len(groups)},
            max_evals=max_evals,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
