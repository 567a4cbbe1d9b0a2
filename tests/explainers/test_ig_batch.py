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


def test_out_of_memory_splits_batches_then_knots(tiny_causal, monkeypatch):
    """On CUDA OOM a batch is halved, and a single input's knots go in chunks: same numbers."""
    import torch

    from explainers.attribution import gradients, ig_batch

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    real = gradients.batched_row_gradients
    sizes = []

    def small_chunks_only(obj, embeds, reduce, batch_size=None, **kwargs):
        sizes.append(batch_size)
        if batch_size and batch_size > 2:
            no_memory()
        return real(obj, embeds, reduce, batch_size, **kwargs)

    monkeypatch.setattr(ig_batch, "_padded_ig", no_memory)
    monkeypatch.setattr("explainers.attribution.ig.batched_row_gradients", small_chunks_only)
    batched = explain_dataset(tiny_causal, ITEMS[:2], steps=8, baseline="eos")
    monkeypatch.undo()
    for item, exp in zip(ITEMS[:2], batched):
        single = explain(
            tiny_causal, item["text"], target=item["target"], method="ig", steps=8, baseline="eos"
        )
        np.testing.assert_allclose(exp.scores, single.scores, rtol=1e-4, atol=1e-6)
    assert sizes[:3] == [4, 2, 4]  # 9 knots: chunks of 4 fail, 2 pass; next input starts at 4
