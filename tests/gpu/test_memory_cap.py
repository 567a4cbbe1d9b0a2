"""Data-set IG under a real GPU memory cap: the padded batch that fits an uncapped GPU runs
out of memory under `torch.cuda.set_per_process_memory_fraction`, is split in two and
retried, down to one input whose knots go through in chunks; the numbers stay the same.

float32, so that "the same" can be 1e-4: the split changes batch shapes, and in bf16 a
different matmul shape may round differently.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.conftest import WORDS, tiny_llama_config, tiny_tokenizer

CAP_BYTES = 640 * 2**20  # the model (~50 MB) and one input's 32 knots at half of them


@pytest.fixture(scope="module")
def wide_lm():
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    tokenizer = tiny_tokenizer()
    config = tiny_llama_config(
        len(tokenizer),
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda")
    return from_pretrained_objects(model, tokenizer, name="wide-llama")


def items(n: int = 12, seed: int = 3) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = [w for w in WORDS if w.isalpha()]
    return [
        {
            "text": " ".join(rng.choice(words) for _ in range(rng.randint(150, 250))),
            "target": " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))),
        }
        for _ in range(n)
    ]


def test_dataset_ig_under_a_memory_cap_splits_retries_and_agrees(wide_lm, monkeypatch):
    from explainers.attribution import ig_batch

    data = items()
    one_batch = {"steps": 31, "baseline": "eos", "max_batch_tokens": 10**9}
    free = ig_batch.explain_dataset(wide_lm, data, **one_batch)
    assert {e.params["batched_inputs"] for e in free} == {len(data)}  # one padded batch

    calls = {"padded": 0, "chunked": 0}
    padded, chunked = ig_batch._padded_ig, ig_batch._knots_in_chunks

    def count_padded(*args, **kwargs):
        calls["padded"] += 1
        return padded(*args, **kwargs)

    def count_chunked(*args, **kwargs):
        calls["chunked"] += 1
        return chunked(*args, **kwargs)

    monkeypatch.setattr(ig_batch, "_padded_ig", count_padded)
    monkeypatch.setattr(ig_batch, "_knots_in_chunks", count_chunked)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(CAP_BYTES / total, 0)
    torch.cuda.reset_peak_memory_stats(0)
    try:
        capped = ig_batch.explain_dataset(wide_lm, data, **one_batch)
        peak = torch.cuda.max_memory_allocated(0)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()
    assert calls["padded"] > 1, calls  # the batch was split and retried
    assert calls["chunked"] >= 1, calls  # down to single inputs run knots in chunks
    assert peak <= CAP_BYTES  # the cap was real: no allocation went past it
    for a, b in zip(free, capped):
        assert a.input_tokens == b.input_tokens
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.delta, a.delta, rtol=1e-3, atol=1e-5)
