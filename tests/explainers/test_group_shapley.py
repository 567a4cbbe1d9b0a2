"""Group Shapley values: exact ones equal the textbook formula, sampled ones converge to
them, both add up to v(all) - v(none), and the prompt's cache changes no value."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.attribution.group_shapley import coalition_values, group_shapley
from explainers.choice import prepare_choice
from explainers.objective import prepare

TEXT = "the milk is in the fridge\nopen the door\ntake an apple\ncook Q"
CANDIDATES = ["take milk", "open fridge door", "cook", "eat an apple"]


def groups_of(obj) -> list[np.ndarray]:
    n = int(obj.prompt_ids.numel())
    return [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9), np.arange(9, n - 1)]


def brute_force(obj, groups) -> np.ndarray:
    """Average marginal contribution over all orderings, each coalition run on its own."""
    n = len(groups)
    out = np.zeros(n)
    orders = list(permutations(range(n)))
    for order in orders:
        kept = np.zeros((1, n), dtype=bool)
        before = coalition_values(obj, groups, kept.copy())[0]
        for player in order:
            kept[0, player] = True
            after = coalition_values(obj, groups, kept.copy())[0]
            out[player] += after - before
            before = after
    return out / len(orders)


@pytest.mark.parametrize("kind", ["choice", "logprob"])
def test_exact_values_equal_the_average_over_orderings(tiny_causal, kind):
    if kind == "choice":
        obj = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    else:
        obj = prepare(tiny_causal, TEXT, "cook")
    groups = groups_of(obj)
    result = group_shapley(obj, groups)
    assert result.exact and result.evaluations == 16
    np.testing.assert_allclose(result.values, brute_force(obj, groups), atol=1e-5)
    assert abs(result.gap) < 1e-5


def test_sampled_values_are_complete_and_near_the_exact_ones(tiny_causal):
    obj = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook", objective="margin")
    groups = groups_of(obj)
    exact = group_shapley(obj, groups)
    sampled = group_shapley(obj, groups, max_evals=15, seed=1)
    assert not sampled.exact and sampled.evaluations <= 16
    assert abs(sampled.gap) < 1e-5  # every ordering sums to v(all) - v(none)
    assert np.all(np.isfinite(sampled.stderr))
    assert np.all(np.abs(sampled.values - exact.values) <= 4 * sampled.stderr + 1e-4)


def test_the_prompt_cache_changes_no_value(tiny_causal):
    obj = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    groups = groups_of(obj)
    coalitions = np.array([[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    cached = coalition_values(obj, groups, coalitions)
    full = coalition_values(obj, groups, coalitions, reuse_prefix=False)
    np.testing.assert_allclose(cached, full, atol=1e-5)
    # A coalition is the prompt without the other groups' tokens, scored on its own.
    ids = obj.prompt_ids.tolist()
    kept = [i for i in range(len(ids)) if i not in set(groups[1]) | set(groups[3])]
    alone = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    with torch.no_grad():
        logp = alone.log_probs_for_ids([np.array([ids[i] for i in kept])], filler=0)
    assert cached[0] == pytest.approx(float(alone.values_from_log_probs(logp)[0, 0]), abs=1e-5)


def test_line_shapley_is_a_registered_method(tiny_causal):
    exp = explain(tiny_causal, TEXT, "segment_shapley", candidates=CANDIDATES)
    values = exp.extras["group_values"]
    assert len(values) == 4 and exp.params["exact"]
    assert float(exp.scores.sum()) == pytest.approx(exp.expected[0], abs=1e-5)
