"""Data-set IG: padded batches across inputs give the one-input numbers."""

from __future__ import annotations

import numpy as np
import pytest

from explainers import explain
from explainers.attribution.ig_batch import explain_dataset
from workbench.errors import WorkbenchError

ITEMS = [
    {"text": "the milk is in the fridge Q", "target": "milk"},
    {"text": "open the red box", "target": "door key"},
    {"text": "take the green apple from the table to the kitchen", "target": "cut cook eat"},
    {"text": "knife", "target": "oven"},
]


@pytest.mark.parametrize("budget", [10_000, 200])  # all inputs in one batch / one per batch
def test_batched_equals_one_input_path(tiny_causal, budget):
    batched = explain_dataset(tiny_causal, ITEMS, steps=8, baseline="eos", max_batch_tokens=budget)
    assert [e.input_text for e in batched] == [it["text"] for it in ITEMS]
    for item, exp in zip(ITEMS, batched):
        single = explain(
            tiny_causal, item["text"], target=item["target"], method="ig", steps=8, baseline="eos"
        )
        assert exp.target_tokens == single.target_tokens
        np.testing.assert_allclose(exp.scores, single.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.expected, single.expected, rtol=1e-4, atol=1e-6)
    if budget == 10_000:
        assert {e.params["batched_inputs"] for e in batched} == {len(ITEMS)}


def test_item_without_text_is_an_error(tiny_causal):
    with pytest.raises(WorkbenchError, match="item 2 has no text"):
        explain_dataset(tiny_causal, [ITEMS[0], {"target": "x"}])
